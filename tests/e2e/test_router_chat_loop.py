"""From a signed Feishu event to what the router publishes, through ingress-feishu and the
router on the session's real JetStream and Redis (the notifier's half is tested on its own)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import CommandRequested, ReplyGenerated
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.testing import collect, drained
from zhongshu.ingress_feishu.main import build_service as build_ingress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.router.main import build_service as build_router
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime.hubconfig import load_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service

ENCRYPT_KEY, TOKEN = "enc-key-for-router-e2e", "verification-token-for-router-e2e"
BOT = User("Acme Bot")


class Loop:
    def __init__(self, js: JetStreamContext, tenant: str, app: str, base_url: str) -> None:
        self.js, self.tenant, self.app, self.base_url = js, tenant, app, base_url

    def feishu(self) -> FeishuEventSender:
        return FeishuEventSender(
            self.base_url, self.app, encrypt_key=ENCRYPT_KEY, verification_token=TOKEN, bot=BOT
        )

    async def settle(self, within_s: float = 15) -> None:
        await drained(self.js, streams.CHAT_INBOUND.name, "router", within_s=within_s)

    async def replies(self) -> list[ReplyGenerated]:
        found = await collect(self.js, subjects.chat_reply("feishu", self.tenant), within_s=2)
        return [wire.decode(m.data, ReplyGenerated).data for m in found]

    async def commands(self) -> list[CommandRequested]:
        found = await collect(self.js, subjects.chat_command("feishu", self.tenant), within_s=2)
        return [wire.decode(m.data, CommandRequested).data for m in found]


@pytest_asyncio.fixture
async def chat_loop(
    js: JetStreamContext, provisioned_nats_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Loop]:
    tenant = "t" + uuid.uuid4().hex[:10]
    app = "e2e-" + tenant
    config = tmp_path / "zhongshu.yaml"
    config.write_text(
        f"""
tenants:
  {tenant}: {{name: Test}}
apps:
  {app}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: cli_e2e, app_secret: s, encrypt_key: {ENCRYPT_KEY},
             verification_token: {TOKEN}, bot_open_id: {BOT.open_id}}}
    group: {{require_mention: true, prefixes: ["/"]}}
"""
    )
    ingress = build_ingress()
    router = build_router(config=StaticConfig(load_config(config, environ={})))
    started: list[Service] = []
    try:
        await ingress.start(
            FeishuIngressSettings(nats_url=provisioned_nats_url, health_port=0, config_path=config)
        )
        started.append(ingress)
        await router.start(RouterSettings(nats_url=provisioned_nats_url, redis_url=redis_url))
        started.append(router)
        yield Loop(js, tenant, app, f"http://127.0.0.1:{ingress.health_port}")
    finally:
        for service in reversed(started):
            await service.stop()


async def test_a_retried_feishu_help_is_answered_once_threaded_under_the_message(
    chat_loop: Loop,
) -> None:
    async with chat_loop.feishu() as feishu:
        payload = feishu.message(text="/help", chat_type="group", mentions=[BOT])
        first = await feishu.send(payload)
        again = await feishu.send(payload)  # Feishu re-pushes an event it thinks was lost
    assert first.acknowledged
    assert again.acknowledged
    await chat_loop.settle()
    replies = await chat_loop.replies()
    assert len(replies) == 1
    assert "/help" in replies[0].text
    handle = replies[0].reply_handle
    assert handle is not None
    assert handle.message_id == payload["event"]["message"]["message_id"]


async def test_free_text_to_the_bot_becomes_a_command_and_group_chatter_is_ignored(
    chat_loop: Loop,
) -> None:
    async with chat_loop.feishu() as feishu:
        await feishu.send(feishu.message(text="summarize today", chat_type="group", mentions=[BOT]))
        await feishu.send(feishu.message(text="lunch, anyone?", chat_type="group"))
    await chat_loop.settle()
    assert [(c.command, c.text) for c in await chat_loop.commands()] == [
        ("chat", "summarize today")
    ]
    assert await chat_loop.replies() == []
