"""What the notifier's tests share: the fixtures' types."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from tests.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from tests.fakes.feishu_openapi import FakeFeishuOpenAPI
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

    def config(self, **alerts: Any) -> HubConfig:
        """Two apps (one per platform) whose credentials match the fakes."""
        return HubConfig.model_validate(self.config_dict(**alerts))

    def config_dict(self, **alerts: Any) -> dict[str, Any]:
        return {
            "tenants": {"acme": {}},
            "apps": {
                "ding": {
                    "tenant": "acme",
                    "platform": "dingtalk",
                    "dingtalk": {
                        "app_key": self.dingtalk.app_key,
                        "app_secret": self.dingtalk.app_secret,
                        "robot_code": self.dingtalk.robot_code,
                    },
                },
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


async def drained(bus: Bus, durable: str, stream: str, within_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        info = await bus.js.consumer_info(stream, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        assert loop.time() < deadline, f"{durable} still has work: {info}"
        await asyncio.sleep(0.1)
