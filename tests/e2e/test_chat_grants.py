"""Chat admin commands end to end: signed Feishu events through ingress-feishu and the router on
the session's real JetStream and Redis. An admin grants a role by @-mention in a group, the
grantee is let in at once (no restart), a non-admin's /grant is refused, and the revocation
shuts the door again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AuditRecorded, CommandRequested, ReplyGenerated
from zhongshu.contracts.streams import GRANTS_KV
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.testing import collect, drained, eventually
from zhongshu.ingress_feishu.main import build_service as build_ingress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.router import domain
from zhongshu.router.main import build_service as build_router
from zhongshu.router.rules import RouterRules
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime.hubconfig import load_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service

ENCRYPT_KEY, TOKEN = "enc-key-for-grants-e2e", "verification-token-for-grants-e2e"
BOT = User("Acme Bot")
ADMIN = User("Wang Fang")
CAROL = User("Carol")


class Hub:
    def __init__(self, js: JetStreamContext, tenant: str, base_url: str, router: Service) -> None:
        self.js, self.tenant, self.base_url, self.router = js, tenant, base_url, router
        self.app = "e2e-" + tenant

    def feishu(self) -> FeishuEventSender:
        return FeishuEventSender(
            self.base_url, self.app, encrypt_key=ENCRYPT_KEY, verification_token=TOKEN, bot=BOT
        )

    async def settle(self) -> None:
        """Until the router has handled everything and its watch holds every grant written."""
        await drained(self.js, streams.CHAT_INBOUND.name, "router", within_s=15)
        kv = await self.js.key_value(GRANTS_KV.bucket)
        latest = (await kv.status()).stream_info.state.last_seq or 0
        grants = self.router.deps.router.grants
        await eventually(lambda: grants.watched.revision >= latest, "the router's grants")

    async def replies(self) -> list[str]:
        found = await collect(self.js, subjects.chat_reply("feishu", self.tenant), within_s=2)
        return [wire.decode(m.data, ReplyGenerated).data.text for m in found]

    async def commands(self) -> list[CommandRequested]:
        found = await collect(self.js, subjects.chat_command("feishu", self.tenant), within_s=2)
        return [wire.decode(m.data, CommandRequested).data for m in found]


@pytest_asyncio.fixture
async def hub(
    js: JetStreamContext, provisioned_nats_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    tenant = "t" + uuid.uuid4().hex[:10]
    config = tmp_path / "zhongshu.yaml"
    config.write_text(
        f"""
tenants:
  {tenant}: {{name: Test}}
apps:
  e2e-{tenant}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: cli_e2e, app_secret: s, encrypt_key: {ENCRYPT_KEY},
             verification_token: {TOKEN}, bot_open_id: {BOT.open_id}}}
    access: {{admins: [{ADMIN.open_id}], users: [ou_nobody_else]}}
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
        yield Hub(js, tenant, f"http://127.0.0.1:{ingress.health_port}", router)
    finally:
        for service in reversed(started):
            await service.stop()


async def test_an_admin_grants_by_mention_and_the_grantee_is_let_in_until_revoked(
    hub: Hub,
) -> None:
    group = "oc_" + uuid.uuid4().hex
    async with hub.feishu() as feishu:

        async def say(text: str, sender: User, mentions: tuple[User, ...] = ()) -> None:
            """One message: in a group when it mentions someone (``@_user_N`` is the Nth of
            ``mentions``, as Feishu writes them), else one to one with the bot."""
            payload = feishu.message(
                text=text,
                chat_type="group" if mentions else "p2p",
                mentions=mentions,
                sender=sender,
                chat_id=group if mentions else "",
            )
            assert (await feishu.send(payload)).acknowledged
            await hub.settle()

        await say("hello", CAROL)
        await say("@_user_1 /grant @_user_2 operator", ADMIN, (BOT, CAROL))
        await say("hello", CAROL)
        await say("@_user_1 /grant @_user_2 admin", CAROL, (BOT, CAROL))
        await say("@_user_1 /revoke @_user_2 operator", ADMIN, (BOT, CAROL))
        await say("hello", CAROL)

    refusal = RouterRules().refusal_text
    assert await hub.replies() == [
        refusal,
        f"Granted operator to {CAROL.open_id}.",
        domain.NOT_ADMIN_TEXT,
        f"Revoked operator from {CAROL.open_id}.",
        refusal,
    ]
    assert [(c.text, c.sender_roles) for c in await hub.commands()] == [("hello", ("operator",))]
    found = await collect(hub.js, subjects.audit(hub.tenant, "grants"), within_s=2)
    audits = [wire.decode(m.data, AuditRecorded).data for m in found]
    assert [(a.action, a.actor, a.target) for a in audits] == [
        ("grant.added", f"chat:{ADMIN.open_id}", f"{hub.app}/{CAROL.open_id}"),
        ("grant.denied", f"chat:{CAROL.open_id}", f"{hub.app}/{CAROL.open_id}"),
        ("grant.revoked", f"chat:{ADMIN.open_id}", f"{hub.app}/{CAROL.open_id}"),
    ]
