"""What the notifier's tests share: the fixtures' types, publishing replies and reading what
the notifier reported about them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import ReplyGenerated
from zhongshu.contracts.events.chat import REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK, ReplyHandle
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.testing import collect
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig


@dataclass
class Bus:
    url: str
    nc: Client
    js: JetStreamContext


@dataclass
class Platforms:
    dingtalk: FakeDingTalkOpenAPI
    feishu: FakeFeishuOpenAPI
    robot_token: str
    robot_secret: str
    feishu_hook: str
    feishu_hook_secret: str

    def config(self, *, card_template_id: str | None = None, **alerts: Any) -> HubConfig:
        """Two apps (one per platform) whose credentials match the fakes; the DingTalk app
        streams into AI cards of ``card_template_id`` when given."""
        return HubConfig.model_validate(
            self.config_dict(card_template_id=card_template_id, **alerts)
        )

    def config_dict(self, *, card_template_id: str | None = None, **alerts: Any) -> dict[str, Any]:
        dingtalk: dict[str, Any] = {
            "app_key": self.dingtalk.app_key,
            "app_secret": self.dingtalk.app_secret,
            "robot_code": self.dingtalk.robot_code,
        }
        if card_template_id:
            dingtalk["card_template_id"] = card_template_id
        return {
            "tenants": {"acme": {}},
            "apps": {
                "ding": {"tenant": "acme", "platform": "dingtalk", "dingtalk": dingtalk},
                "lark": {
                    "tenant": "acme",
                    "platform": "feishu",
                    "feishu": {
                        "app_id": self.feishu.app_id,
                        "app_secret": self.feishu.app_secret,
                    },
                },
            },
            "alerts": alerts,
        }


StartNotifier = Callable[..., Awaitable[Service]]


def replica_settings(
    bus: Bus, platforms: Platforms, redis_url: str, **settings: Any
) -> NotifierSettings:
    """A test replica's settings: the test's bus, Redis and fake platforms, short timeouts."""
    values: dict[str, Any] = {
        "nats_url": bus.url,
        "redis_url": redis_url,
        "health_port": 0,
        "uvloop": False,
        "drain_timeout_s": 5,
        "connect_timeout_s": 5,
        "feishu_base_url": platforms.feishu.base_url,
        "dingtalk_api_url": platforms.dingtalk.base_url,
        "dingtalk_oapi_url": platforms.dingtalk.base_url,
        "http_timeout_s": 2,
        **settings,
    }
    return NotifierSettings(**values)


def dingtalk_session_reply(
    platforms: Platforms, conversation: str, reply_id: str, **fields: Any
) -> ReplyGenerated:
    """A reply to a DingTalk conversation through a live sessionWebhook of the fake."""
    url, expires = platforms.dingtalk.session_webhook(conversation)
    chat_kind = fields.pop("chat_kind", None)
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id=conversation,
        expires_at=expires,
        **({"chat_kind": chat_kind} if chat_kind else {}),
    )
    return ReplyGenerated(
        reply_id=reply_id,
        platform="dingtalk",
        app="ding",
        tenant="acme",
        chat_id=conversation,
        reply_handle=handle,
        **fields,
    )


async def publish(bus: Bus, *replies: ReplyGenerated) -> None:
    for reply in replies:
        env = wire.make_envelope(
            reply, id=f"{reply.reply_id}:{reply.chunk_index}", source="test", tenant=reply.tenant
        )
        await bus.js.publish(
            subjects.chat_reply(reply.platform, reply.tenant),
            wire.encode(env),
            headers={H.MSG_ID: env.id},
        )


async def outcomes(
    bus: Bus, status: str, platform: str, count: int, within_s: float = 15
) -> list[Any]:
    msgs = await collect(
        bus.js, subjects.delivery(status, platform, "acme"), count=count, within_s=within_s
    )
    return [wire.decode_any(m.data).data for m in msgs]
