"""Where a message goes: a reply's handle or an alert route becomes a :class:`Channel`, which
knows its adapter call, its rate-limit buckets and whether a resend is harmless. This is the
one place that looks at the platform; the delivery flow is the same for both."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from zhongshu.contracts.events import ReplyGenerated
from zhongshu.contracts.events.chat import (
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    REPLY_HANDLE_FEISHU_CARD_UPDATE,
    REPLY_HANDLE_FEISHU_MESSAGE,
    ReplyHandle,
)
from zhongshu.notifier.adapters import feishu
from zhongshu.notifier.adapters.alertcards import SentCard
from zhongshu.notifier.adapters.dingtalk import AI_CARD_PROCESSING, CardSpace, DingTalkAdapter
from zhongshu.notifier.adapters.feishu import FeishuAdapter
from zhongshu.notifier.adapters.ratelimit import Limit, SlidingWindowLimiter
from zhongshu.notifier.adapters.results import Delivered, RateLimited, Rejected, SendResult
from zhongshu.notifier.message import Outgoing
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime.hubconfig import AlertRoute, DingTalkCredentials, HubConfig


class NoRoute(Exception):
    """The message cannot be sent anywhere (unknown app, missing credentials): permanent."""


@dataclass(frozen=True)
class CardStream:
    """Updating one card in place while a reply streams (Feishu CardKit, DingTalk AI cards).

    ``create`` makes the card, or only names it, and gives its id; ``message`` is what shows
    it in the chat, sent once through ``show`` and recorded in the ledger; ``update`` replaces
    its text with the text so far; ``finish`` writes the final text and ends the stream."""

    create: Callable[[str, str, str | None], Awaitable[tuple[str | None, SendResult]]]
    """(reply id, text so far, title) → (card id or None, result)."""
    message: Callable[[str, str, str | None], Outgoing]
    """(card id, text so far, title) → the message that shows the card."""
    show: Callable[[Outgoing], Awaitable[SendResult]]
    update: Callable[[str, str, int], Awaitable[SendResult]]
    """(card id, text so far, sequence)."""
    finish: Callable[[str, str, int], Awaitable[SendResult]]
    """(card id, final text, sequence)."""
    show_idempotent: bool
    """Showing the card again after a crash is harmless (Feishu's request ``uuid``). Updates
    go one at a time on every platform, in sequence order (``StreamState``): CardKit refuses
    an update older than the last one, DingTalk would apply it over a newer one."""


@dataclass(frozen=True)
class CardTarget:
    """A channel whose cards can carry callback buttons and be redrawn later: an app's chat
    (a robot webhook can neither receive a click nor update what it sent). The ref its send
    returns (``Delivered.platform_message_id``) names the card for :func:`card_update_channel`."""

    platform: str
    app: str
    chat: str


@dataclass(frozen=True)
class Channel:
    description: str
    platform: str
    idempotent: bool
    max_bytes: int
    limits: tuple[Limit, ...]
    send: Callable[[Outgoing], Awaitable[SendResult]]
    stream: CardStream | None = None
    cards: CardTarget | None = None


@dataclass(frozen=True)
class Adapters:
    dingtalk: DingTalkAdapter
    feishu: FeishuAdapter
    limiter: SlidingWindowLimiter | None = None
    """Paces the calls a streamed card makes outside the delivery flow (CardKit); None sends
    them unpaced."""


# A card update replaces the card whole: its text is never cut into parts.
NEVER_SPLIT = sys.maxsize

# Only a card replaces a card; anything else answering a card action is threaded under it.
_FEISHU_REPLY_HANDLES = frozenset({REPLY_HANDLE_FEISHU_MESSAGE, REPLY_HANDLE_FEISHU_CARD_UPDATE})


def _digest(secret: str) -> str:
    # Rate-limit keys name a robot without putting its access token into Redis.
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def reply_channel(
    reply: ReplyGenerated, config: HubConfig, adapters: Adapters, settings: NotifierSettings
) -> Channel:
    if reply.platform == "dingtalk":
        return _dingtalk_channel(reply, config, adapters, settings)
    return _feishu_channel(reply, config, adapters, settings)


def _dingtalk_channel(
    reply: ReplyGenerated, config: HubConfig, adapters: Adapters, settings: NotifierSettings
) -> Channel:
    app = config.apps.get(reply.app)
    handle = reply.reply_handle
    chat_id = (handle.chat_id if handle else None) or reply.chat_id
    creds = app.dingtalk if app is not None else None
    dingtalk_limit = Limit(
        f"dingtalk:{reply.app}:{chat_id}",
        settings.dingtalk_robot_per_window,
        settings.dingtalk_robot_window_s,
    )
    stream = _dingtalk_stream(adapters.dingtalk, creds, handle, chat_id, settings)
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
            "dingtalk sessionWebhook",
            "dingtalk",
            False,
            20_000,
            (dingtalk_limit,),
            via_webhook,
            stream,
        )
    if creds is None:
        raise NoRoute(f"no DingTalk app {reply.app!r} configured to send through the OpenAPI")
    conversation_id, staff_id = _dingtalk_addressee(handle, chat_id)
    app_key, app_secret = creds.app_key, creds.app_secret.get_secret_value()
    robot_code = creds.robot_code or creds.app_key

    async def via_openapi(message: Outgoing) -> SendResult:
        return await adapters.dingtalk.send_robot(
            app_key=app_key,
            app_secret=app_secret,
            robot_code=robot_code,
            conversation_id=conversation_id,
            user_ids=(staff_id,) if staff_id else (),
            message=message,
        )

    return Channel(
        "dingtalk robot OpenAPI" + (" (one-to-one)" if staff_id else ""),
        "dingtalk",
        False,
        15_000,
        (dingtalk_limit,),
        via_openapi,
        stream,
    )


def _dingtalk_addressee(handle: ReplyHandle | None, chat_id: str) -> tuple[str | None, str | None]:
    """(group conversation id, staff id) for the robot OpenAPI. A one-to-one chat's
    conversation id starts with ``cid`` like a group's, but only ``oToMessages/batchSend``
    with the user's staff id reaches it: ingress says which kind of chat it is."""
    chat_kind = handle.chat_kind if handle is not None else None
    user_id = handle.user_id if handle is not None else None
    if chat_kind == "group":
        return chat_id, None
    if chat_kind == "p2p" or user_id:
        if not user_id:
            raise NoRoute(
                "a one-to-one DingTalk chat without the user's staff id (an external user?) "
                "cannot be answered once its sessionWebhook expired"
            )
        return None, user_id
    # Handles that do not say (alert routes naming a chat, events from before chat_kind):
    # group conversation ids start with "cid", anything else is taken as a staff id.
    return (chat_id, None) if chat_id.startswith("cid") else (None, chat_id)


def _card_space(handle: ReplyHandle | None, chat_id: str) -> CardSpace | None:
    """Where an AI card for this chat goes, when the handle says which kind of chat it is."""
    if handle is None:
        return None
    if handle.chat_kind == "group" and chat_id:
        return CardSpace(conversation_id=chat_id)
    if handle.chat_kind == "p2p" and handle.user_id:
        return CardSpace(staff_id=handle.user_id)
    return None


def _dingtalk_stream(
    adapter: DingTalkAdapter,
    creds: DingTalkCredentials | None,
    handle: ReplyHandle | None,
    chat_id: str,
    settings: NotifierSettings,
) -> CardStream | None:
    """AI-card streaming, for apps with a card template and chats we can address a card to;
    None keeps the final-only path."""
    space = _card_space(handle, chat_id)
    if creds is None or not creds.card_template_id or space is None:
        return None
    template_id = creds.card_template_id
    app_key, app_secret = creds.app_key, creds.app_secret.get_secret_value()
    robot_code = creds.robot_code or creds.app_key
    key = settings.dingtalk_card_content_key

    async def create(reply_id: str, text: str, title: str | None) -> tuple[str, SendResult]:
        # The card's id (outTrackId) is ours to choose: the reply id, so every chunk and every
        # retry name the same card. Nothing exists on the platform before it is shown.
        return reply_id, Delivered(None)

    def message(card_id: str, text: str, title: str | None) -> Outgoing:
        params = {key: text, "flowStatus": AI_CARD_PROCESSING}
        return Outgoing(kind="card", title=title, card={"outTrackId": card_id, "params": params})

    async def show(message: Outgoing) -> SendResult:
        card = message.card or {}
        return await adapter.create_ai_card(
            app_key=app_key,
            app_secret=app_secret,
            robot_code=robot_code,
            template_id=template_id,
            out_track_id=str(card["outTrackId"]),
            space=space,
            params=dict(card["params"]),
        )

    async def stream_text(card_id: str, text: str, finalize: bool) -> SendResult:
        return await adapter.stream_ai_card(
            app_key=app_key,
            app_secret=app_secret,
            out_track_id=card_id,
            key=key,
            content=text,
            finalize=finalize,
        )

    async def update(card_id: str, text: str, sequence: int) -> SendResult:
        return await stream_text(card_id, text, False)

    async def finish(card_id: str, text: str, sequence: int) -> SendResult:
        return await stream_text(card_id, text, True)

    # No idempotency key for createAndDeliver, and no sequence for streaming updates.
    return CardStream(create, message, show, update, finish, show_idempotent=False)


def _feishu_channel(
    reply: ReplyGenerated, config: HubConfig, adapters: Adapters, settings: NotifierSettings
) -> Channel:
    app = config.apps.get(reply.app)
    handle = reply.reply_handle
    chat_id = (handle.chat_id if handle else None) or reply.chat_id
    if app is None or app.feishu is None:
        raise NoRoute(f"no Feishu app {reply.app!r} configured")
    app_id, secret = app.feishu.app_id, app.feishu.app_secret.get_secret_value()
    feishu_adapter = adapters.feishu
    limit = Limit(
        f"feishu:chat:{chat_id}", settings.feishu_chat_per_window, settings.feishu_chat_window_s
    )
    # Sends, replies and card updates are three APIs, each with its own per-app quota.
    send_limits = (limit, *feishu_api_limits(settings, app_id, "im.message.create"))
    reply_limits = (limit, *feishu_api_limits(settings, app_id, "im.message.reply"))
    max_bytes = feishu.MAX_TEXT_BYTES if reply.kind == "text" else feishu.MAX_CARD_BYTES
    message_id = handle.message_id if handle is not None else None
    if (
        handle is not None
        and handle.kind == REPLY_HANDLE_FEISHU_CARD_UPDATE
        and message_id
        and reply.kind == "card"
    ):
        card_message = message_id
        # 5 updates/s per message (the chat's limit is for new messages).
        per_message = Limit(
            f"feishu:message:{card_message}",
            settings.feishu_chat_per_window,
            settings.feishu_chat_window_s,
        )

        async def update_card(message: Outgoing) -> SendResult:
            return await feishu_adapter.update_card(
                app_id=app_id, app_secret=secret, message_id=card_message, message=message
            )

        # Setting the same card again is harmless: a resend after a crash is safe.
        limits = (per_message, *feishu_api_limits(settings, app_id, "im.message.patch"))
        return Channel("feishu card update", "feishu", True, NEVER_SPLIT, limits, update_card)
    if handle is not None and handle.kind in _FEISHU_REPLY_HANDLES and message_id:
        parent = message_id

        async def as_reply(message: Outgoing) -> SendResult:
            return await feishu_adapter.reply(
                app_id=app_id, app_secret=secret, message_id=parent, message=message
            )

        stream = _feishu_stream(feishu_adapter, app_id, secret, as_reply)
        stream = paced_cardkit(stream, adapters.limiter, settings, app_id)
        return Channel("feishu reply", "feishu", True, max_bytes, reply_limits, as_reply, stream)
    if not chat_id:
        raise NoRoute("a Feishu reply without a message id or chat id")

    async def to_chat(message: Outgoing) -> SendResult:
        return await feishu_adapter.send_to_chat(
            app_id=app_id, app_secret=secret, chat_id=chat_id, message=message
        )

    stream = _feishu_stream(feishu_adapter, app_id, secret, to_chat)
    stream = paced_cardkit(stream, adapters.limiter, settings, app_id)
    return Channel("feishu chat", "feishu", True, max_bytes, send_limits, to_chat, stream)


def _feishu_stream(
    adapter: FeishuAdapter,
    app_id: str,
    app_secret: str,
    show: Callable[[Outgoing], Awaitable[SendResult]],
) -> CardStream:
    async def create(reply_id: str, text: str, title: str | None) -> tuple[str | None, SendResult]:
        return await adapter.create_streaming_card(
            app_id=app_id, app_secret=app_secret, text=text, title=title
        )

    def message(card_id: str, text: str, title: str | None) -> Outgoing:
        # The card holds the text; the message only references it (with the reply's uuid).
        return Outgoing(kind="card", card={"type": "card", "data": {"card_id": card_id}})

    async def update(card_id: str, text: str, sequence: int) -> SendResult:
        return await adapter.stream_text(
            app_id=app_id, app_secret=app_secret, card_id=card_id, text=text, sequence=sequence
        )

    async def finish(card_id: str, text: str, sequence: int) -> SendResult:
        result = await update(card_id, text, sequence - 1)
        if isinstance(result, Rejected) and result.code == feishu.STREAMING_CLOSED:
            # Only the final chunk closes the stream: this one did, before a crash kept it
            # from recording so. Its text is on the card and the stream is closed.
            return Delivered(None)
        if not isinstance(result, Delivered):
            return result
        return await adapter.close_stream(
            app_id=app_id, app_secret=app_secret, card_id=card_id, sequence=sequence
        )

    return CardStream(create, message, show, update, finish, show_idempotent=True)


def feishu_api_limits(
    settings: NotifierSettings, app_id: str, api: str, *, share: float = 1.0
) -> tuple[Limit, ...]:
    """Feishu's per-app quota of one API (per second and per minute), for every replica; keyed
    by the platform's app id, which two configured apps may share. ``share`` < 1 leaves the
    rest of the quota to callers that wait (best-effort calls take only while it is free)."""
    limits = []
    for count, window_s, name in (
        (settings.feishu_app_api_per_s, 1.0, "s"),
        (settings.feishu_app_api_per_min, 60.0, "min"),
    ):
        if count > 0:
            limits.append(
                Limit(f"feishu:app:{app_id}:{api}:{name}", max(1, int(count * share)), window_s)
            )
    return tuple(limits)


def paced_cardkit(
    stream: CardStream,
    limiter: SlidingWindowLimiter | None,
    settings: NotifierSettings,
    app_id: str,
) -> CardStream:
    """The stream's CardKit calls, paced like sends: creating a card and writing its final text
    wait for their slots; an update in between is skipped (answered ``RateLimited``) unless
    the app's and the card's quotas have room within ``stream_update_share``, since the next
    one carries the whole text anyway. Showing the card is a send, paced by the flow."""
    if limiter is None:
        return stream
    share = settings.stream_update_share
    per_card = settings.cardkit_card_per_s
    create_limits = feishu_api_limits(settings, app_id, "cardkit.card.create")
    update_limits = feishu_api_limits(settings, app_id, "cardkit.card.element.content", share=share)
    # Finishing writes the last text and then the settings: two calls on the card.
    finish_limits = (
        *feishu_api_limits(settings, app_id, "cardkit.card.element.content"),
        *feishu_api_limits(settings, app_id, "cardkit.card.settings"),
    )

    def card(card_id: str, count: int, weight: int = 1) -> Limit:
        return Limit(f"feishu:card:{card_id}", count, 1.0, weight)

    async def create(reply_id: str, text: str, title: str | None) -> tuple[str | None, SendResult]:
        _, confirm = await limiter.take_all(create_limits)
        try:
            return await stream.create(reply_id, text, title)
        finally:
            await confirm()

    async def update(card_id: str, text: str, sequence: int) -> SendResult:
        best_effort = (*update_limits, card(card_id, max(1, int(per_card * share))))
        wait, confirm = await limiter.try_take_all(best_effort)
        if wait > 0:
            return RateLimited(wait, "paced")
        try:
            return await stream.update(card_id, text, sequence)
        finally:
            await confirm()

    async def finish(card_id: str, text: str, sequence: int) -> SendResult:
        _, confirm = await limiter.take_all((*finish_limits, card(card_id, per_card, 2)))
        try:
            return await stream.finish(card_id, text, sequence)
        finally:
            await confirm()

    return replace(stream, create=create, update=update, finish=finish)


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
        target = CardTarget(app.platform, route.app, route.chat)
        if app.platform == "dingtalk":
            return _dingtalk_card_channel(target, app.dingtalk, adapters.dingtalk, settings)
        reply = ReplyGenerated(
            reply_id="alert",
            platform=app.platform,
            app=route.app,
            tenant=app.tenant,
            chat_id=route.chat,
            kind="card",
        )
        return replace(reply_channel(reply, config, adapters, settings), cards=target)
    raise NoRoute("alert route has neither a robot webhook nor an app and chat")


def _dingtalk_card_channel(
    target: CardTarget,
    creds: DingTalkCredentials | None,
    adapter: DingTalkAdapter,
    settings: NotifierSettings,
) -> Channel:
    """Alert cards with buttons in a DingTalk chat: a card instance of the button template
    (``outTrackId`` = the message's idempotency key, the send record's), delivered to the
    group, or to the user's chat with the robot when the chat is a staff id."""
    if creds is None:
        raise NoRoute(f"no DingTalk app {target.app!r} configured to send cards")
    conversation_id, staff_id = _dingtalk_addressee(None, target.chat)
    space = CardSpace(conversation_id=conversation_id, staff_id=staff_id)
    app_key, app_secret = creds.app_key, creds.app_secret.get_secret_value()
    robot_code = creds.robot_code or creds.app_key
    template_id = settings.dingtalk_alert_card_template
    limit = Limit(
        f"dingtalk:{target.app}:{target.chat}",
        settings.dingtalk_robot_per_window,
        settings.dingtalk_robot_window_s,
    )

    async def send_card(message: Outgoing) -> SendResult:
        if not message.idempotency_key:
            return Rejected("a DingTalk card needs an outTrackId", "outTrackId")
        return await adapter.send_button_card(
            app_key=app_key,
            app_secret=app_secret,
            robot_code=robot_code,
            template_id=template_id,
            out_track_id=out_track_id(message.idempotency_key),
            space=space,
            message=message,
        )

    # No idempotency key for createAndDeliver: an unknown outcome is not sent again.
    return Channel(
        "dingtalk card", "dingtalk", False, NEVER_SPLIT, (limit,), send_card, cards=target
    )


def out_track_id(key: str) -> str:
    """A DingTalk card id from any key (the platform allows letters, digits, ``-`` and ``_``)."""
    return "zs-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def card_update_channel(
    card: SentCard, config: HubConfig, adapters: Adapters, settings: NotifierSettings
) -> Channel:
    """Redraws a card sent earlier through an app (by its ref), with the app's credentials as
    configured now. Setting the same card again is harmless: a resend after a crash is safe."""
    app = config.apps.get(card.app)
    if card.platform == "feishu":
        if app is None or app.feishu is None:
            raise NoRoute(f"no Feishu app {card.app!r} configured to update its cards")
        app_id, secret = app.feishu.app_id, app.feishu.app_secret.get_secret_value()
        message_id = card.ref

        async def update_feishu(message: Outgoing) -> SendResult:
            return await adapters.feishu.update_card(
                app_id=app_id, app_secret=secret, message_id=message_id, message=message
            )

        per_message = Limit(
            f"feishu:message:{message_id}",
            settings.feishu_chat_per_window,
            settings.feishu_chat_window_s,
        )
        limits = (per_message, *feishu_api_limits(settings, app_id, "im.message.patch"))
        return Channel("feishu card update", "feishu", True, NEVER_SPLIT, limits, update_feishu)
    if app is None or app.dingtalk is None:
        raise NoRoute(f"no DingTalk app {card.app!r} configured to update its cards")
    app_key, app_secret = app.dingtalk.app_key, app.dingtalk.app_secret.get_secret_value()
    track_id = card.ref

    async def update_dingtalk(message: Outgoing) -> SendResult:
        return await adapters.dingtalk.update_button_card(
            app_key=app_key, app_secret=app_secret, out_track_id=track_id, message=message
        )

    limit = Limit(f"dingtalk:card:{track_id}", settings.cardkit_card_per_s, 1.0)
    return Channel("dingtalk card update", "dingtalk", True, NEVER_SPLIT, (limit,), update_dingtalk)


def for_part(message: Outgoing, part: str, offset: int) -> Outgoing:
    """One part of a message; Feishu's uuid is the reply id itself for the first part."""
    key = message.idempotency_key
    if key is not None and offset:
        key = f"{key}#{offset}"
    return replace(message, text=part, idempotency_key=key)
