"""Where a message goes: a reply's handle or an alert route becomes a :class:`Channel`, which
knows its adapter call, its rate-limit buckets and whether a resend is harmless. This is the
one place that looks at the platform; the delivery flow is the same for both."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from zhongshu.contracts.events import ReplyGenerated
from zhongshu.contracts.events.chat import (
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    REPLY_HANDLE_FEISHU_MESSAGE,
)
from zhongshu.notifier.adapters import feishu
from zhongshu.notifier.adapters.dingtalk import DingTalkAdapter
from zhongshu.notifier.adapters.feishu import FeishuAdapter
from zhongshu.notifier.adapters.results import SendResult
from zhongshu.notifier.message import Outgoing
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime.hubconfig import AlertRoute, HubConfig


class NoRoute(Exception):
    """The message cannot be sent anywhere (unknown app, missing credentials): permanent."""


@dataclass(frozen=True)
class Limit:
    key: str
    count: int
    window_s: float


@dataclass(frozen=True)
class CardStream:
    """Updating one card in place while a reply streams (Feishu CardKit)."""

    create: Callable[[str, str | None], Awaitable[tuple[str | None, SendResult]]]
    update: Callable[[str, str, int], Awaitable[SendResult]]
    close: Callable[[str, int], Awaitable[SendResult]]

    @staticmethod
    def message(card_id: str) -> Outgoing:
        """What shows a streaming card in the chat."""
        return Outgoing(kind="card", card={"type": "card", "data": {"card_id": card_id}})


@dataclass(frozen=True)
class Channel:
    description: str
    platform: str
    idempotent: bool
    max_bytes: int
    limits: tuple[Limit, ...]
    send: Callable[[Outgoing], Awaitable[SendResult]]
    stream: CardStream | None = None


@dataclass(frozen=True)
class Adapters:
    dingtalk: DingTalkAdapter
    feishu: FeishuAdapter


def _digest(secret: str) -> str:
    # Rate-limit keys name a robot without putting its access token into Redis.
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def reply_channel(
    reply: ReplyGenerated, config: HubConfig, adapters: Adapters, settings: NotifierSettings
) -> Channel:
    app = config.apps.get(reply.app)
    handle = reply.reply_handle
    chat_id = (handle.chat_id if handle else None) or reply.chat_id
    if reply.platform == "dingtalk":
        dingtalk_limit = Limit(
            f"dingtalk:{reply.app}:{chat_id}",
            settings.dingtalk_robot_per_window,
            settings.dingtalk_robot_window_s,
        )
        margin = timedelta(seconds=settings.session_webhook_margin_s)
        if (
            handle is not None
            and handle.kind == REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK
            and handle.url
            and handle.expires_at is not None
            and handle.expires_at - margin > datetime.now(UTC)
        ):
            url = handle.url

            async def via_webhook(message: Outgoing) -> SendResult:
                return await adapters.dingtalk.send_session_webhook(url, message)

            return Channel(
                "dingtalk sessionWebhook", "dingtalk", False, 20_000, (dingtalk_limit,), via_webhook
            )
        if app is None or app.dingtalk is None:
            raise NoRoute(f"no DingTalk app {reply.app!r} configured to send through the OpenAPI")
        creds = app.dingtalk
        robot_code = creds.robot_code or creds.app_key
        # Group conversation ids start with "cid"; anything else is taken as a staff id.
        group = chat_id.startswith("cid")

        async def via_openapi(message: Outgoing) -> SendResult:
            return await adapters.dingtalk.send_robot(
                app_key=creds.app_key,
                app_secret=creds.app_secret.get_secret_value(),
                robot_code=robot_code,
                conversation_id=chat_id if group else None,
                user_ids=() if group else (chat_id,),
                message=message,
            )

        return Channel(
            "dingtalk robot OpenAPI", "dingtalk", False, 15_000, (dingtalk_limit,), via_openapi
        )
    if app is None or app.feishu is None:
        raise NoRoute(f"no Feishu app {reply.app!r} configured")
    fcreds = app.feishu
    secret = fcreds.app_secret.get_secret_value()
    limit = Limit(
        f"feishu:chat:{chat_id}", settings.feishu_chat_per_window, settings.feishu_chat_window_s
    )
    max_bytes = feishu.MAX_TEXT_BYTES if reply.kind == "text" else feishu.MAX_CARD_BYTES
    stream = _feishu_stream(adapters.feishu, fcreds.app_id, secret)
    if handle is not None and handle.kind == REPLY_HANDLE_FEISHU_MESSAGE and handle.message_id:
        message_id = handle.message_id

        async def as_reply(message: Outgoing) -> SendResult:
            return await adapters.feishu.reply(
                app_id=fcreds.app_id, app_secret=secret, message_id=message_id, message=message
            )

        return Channel("feishu reply", "feishu", True, max_bytes, (limit,), as_reply, stream)
    if not chat_id:
        raise NoRoute("a Feishu reply without a message id or chat id")

    async def to_chat(message: Outgoing) -> SendResult:
        return await adapters.feishu.send_to_chat(
            app_id=fcreds.app_id, app_secret=secret, chat_id=chat_id, message=message
        )

    return Channel("feishu chat", "feishu", True, max_bytes, (limit,), to_chat, stream)


def _feishu_stream(adapter: FeishuAdapter, app_id: str, app_secret: str) -> CardStream:
    async def create(text: str, title: str | None) -> tuple[str | None, SendResult]:
        return await adapter.create_streaming_card(
            app_id=app_id, app_secret=app_secret, text=text, title=title
        )

    async def update(card_id: str, text: str, sequence: int) -> SendResult:
        return await adapter.stream_text(
            app_id=app_id, app_secret=app_secret, card_id=card_id, text=text, sequence=sequence
        )

    async def close(card_id: str, sequence: int) -> SendResult:
        return await adapter.close_stream(
            app_id=app_id, app_secret=app_secret, card_id=card_id, sequence=sequence
        )

    return CardStream(create, update, close)


def alert_channel(
    route: AlertRoute, config: HubConfig, adapters: Adapters, settings: NotifierSettings
) -> Channel:
    secret = route.secret.get_secret_value() if route.secret else None
    if route.dingtalk_robot is not None:
        token = route.dingtalk_robot.get_secret_value()
        limit = Limit(
            f"dingtalk:robot:{_digest(token)}",
            settings.dingtalk_robot_per_window,
            settings.dingtalk_robot_window_s,
        )

        async def dingtalk_robot(message: Outgoing) -> SendResult:
            return await adapters.dingtalk.send_custom_robot(token, secret, message)

        return Channel("dingtalk custom robot", "dingtalk", False, 20_000, (limit,), dingtalk_robot)
    if route.feishu_robot is not None:
        hook = route.feishu_robot.get_secret_value()
        limits = (
            Limit(
                f"feishu:bot:{_digest(hook)}",
                settings.feishu_chat_per_window,
                settings.feishu_chat_window_s,
            ),
            # Custom bots: 100/min besides 5/s.
            Limit(f"feishu:bot-min:{_digest(hook)}", 95, 60.0),
        )

        async def feishu_bot(message: Outgoing) -> SendResult:
            # A custom bot has no uuid: a resend is not harmless.
            return await adapters.feishu.send_custom_bot(hook, secret, message)

        return Channel("feishu custom bot", "feishu", False, 20_000, limits, feishu_bot)
    if route.app and route.chat:
        app = config.apps.get(route.app)
        if app is None:
            raise NoRoute(f"alert route names unknown app {route.app!r}")
        reply = ReplyGenerated(
            reply_id="alert",
            platform=app.platform,
            app=route.app,
            tenant=app.tenant,
            chat_id=route.chat,
            kind="card",
        )
        return reply_channel(reply, config, adapters, settings)
    raise NoRoute("alert route has neither a robot webhook nor an app and chat")


def for_part(message: Outgoing, part: str, offset: int) -> Outgoing:
    """One part of a message; Feishu's uuid is the reply id itself for the first part."""
    key = message.idempotency_key
    if key is not None and offset:
        key = f"{key}#{offset}"
    return replace(message, text=part, idempotency_key=key)
