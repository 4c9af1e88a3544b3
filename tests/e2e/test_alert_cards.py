"""An alert handled from chat, end to end on a private JetStream and the session's Redis: the
notifier sends the alert as a card with buttons to the fake Feishu, an admin's signed click
goes through ingress-feishu (toasted) and the router to one ``AlertActionRequested``; the
watchdog's answer (an ``AlertStateChanged``: published by the test in the first test, by the
real watchdog in the second) redraws the card in place; a non-admin's click changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    AlertActionRequested,
    AlertRaised,
    AlertStateChanged,
    AuditRecorded,
    alert_key,
)
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI, card_text
from zhongshu.devstack.testing import collect, drained, provision_all
from zhongshu.ingress_feishu.main import build_service as build_ingress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.notifier.main import build_service as build_notifier
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.router.main import build_service as build_router
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime.hubconfig import load_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service
from zhongshu.watchdog.main import build_service as build_watchdog
from zhongshu.watchdog.settings import WatchdogSettings

ENCRYPT_KEY, TOKEN = "enc-key-for-alert-e2e", "verification-token-for-alert-e2e"
APP, APP_ID, APP_SECRET = "ops", "cli_ops", "ops-app-secret"
BOT, ADMIN, BYSTANDER = User("Ops Bot"), User("Li Lei"), User("Han Meimei")
OPS_CHAT = "oc_ops_alerts"


@dataclass
class Hub:
    js: JetStreamContext
    feishu: FakeFeishuOpenAPI
    tenant: str
    ingress_url: str

    def sender(self) -> FeishuEventSender:
        return FeishuEventSender(
            self.ingress_url, APP, encrypt_key=ENCRYPT_KEY, verification_token=TOKEN, bot=BOT
        )

    async def settle(self) -> None:
        await drained(self.js, streams.CHAT_INBOUND.name, "router")


@contextlib.asynccontextmanager
async def running_hub(
    nats_url: str, redis_url: str, tmp_path: Path, *, watchdog: bool
) -> AsyncIterator[Hub]:
    """ingress-feishu, the router and the notifier (and the watchdog when asked) on ``nats_url``,
    the notifier sending to a fake Feishu."""
    await provision_all(nats_url)
    tenant = "t" + uuid.uuid4().hex[:10]
    path = tmp_path / "zhongshu.yaml"
    path.write_text(
        f"""
tenants:
  {tenant}: {{name: Test}}
apps:
  {APP}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: {APP_ID}, app_secret: {APP_SECRET}, encrypt_key: {ENCRYPT_KEY},
             verification_token: {TOKEN}, bot_open_id: {BOT.open_id}}}
    access: {{admins: [{ADMIN.open_id}]}}
alerts:
  error: [{{app: {APP}, chat: {OPS_CHAT}}}]
watchdog: {{check_interval_s: 0.2, remind_s: 0}}
"""
    )
    config = load_config(path, environ={})
    client = await nats.connect(nats_url)
    started: list[Service] = []
    async with FakeFeishuOpenAPI(app_id=APP_ID, app_secret=APP_SECRET) as feishu:
        try:
            ingress = build_ingress()
            await ingress.start(
                FeishuIngressSettings(nats_url=nats_url, health_port=0, config_path=path)
            )
            started.append(ingress)
            router = build_router(config=StaticConfig(config))
            await router.start(
                RouterSettings(
                    nats_url=nats_url, redis_url=redis_url, feishu_base_url=feishu.base_url
                )
            )
            started.append(router)
            notifier = build_notifier(config=config)
            await notifier.start(
                NotifierSettings(
                    nats_url=nats_url,
                    redis_url=redis_url,
                    health_port=0,
                    feishu_base_url=feishu.base_url,
                    http_timeout_s=2,
                )
            )
            started.append(notifier)
            if watchdog:
                dog = build_watchdog(config=StaticConfig(config))
                await dog.start(
                    WatchdogSettings(nats_url=nats_url, health_port=0, watchdog_disks=[])
                )
                started.append(dog)
            yield Hub(client.jetstream(), feishu, tenant, f"http://127.0.0.1:{ingress.health_port}")
        finally:
            for service in reversed(started):
                with contextlib.suppress(Exception):
                    await service.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


@pytest_asyncio.fixture
async def hub(
    private_nats_server: NatsServer, redis_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    async with running_hub(private_nats_server.url, redis_url, tmp_path, watchdog=False) as hub:
        yield hub


async def test_an_admin_acknowledges_an_alert_from_its_card_and_the_card_says_so(
    hub: Hub,
) -> None:
    alert = AlertRaised(
        level="error",
        source="watchdog",
        title="agent is down",
        detail="no heartbeat for 60 s",
        dedupe_key=f"down:agent:{uuid.uuid4().hex}",
    )
    key = alert_key(alert)
    env = wire.make_envelope(alert, id=f"alert-{uuid.uuid4().hex}", source="test", tenant="")
    await hub.js.publish(
        subjects.alert("error", "watchdog"), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    fake = hub.feishu
    fake.set_departments(ADMIN.open_id, name=ADMIN.name)  # what the contact API says of them
    await fake.wait_until(lambda: len(fake.cards_in(OPS_CHAT)) == 1, 20)
    [card_message] = fake.cards_in(OPS_CHAT)
    assert [b.label for b in fake.buttons(card_message)] == [
        "Acknowledge",
        "Silence 1 h",
        "Resolve",
    ]

    async with hub.sender() as feishu:
        clicked = await feishu.click(fake, OPS_CHAT, "Acknowledge", user=ADMIN)
    assert clicked.response.status_code == 200
    assert clicked.response.json()["toast"]["type"] == "info"
    await hub.settle()
    [raw] = await collect(hub.js, subjects.alert_action(key), count=1, within_s=10)
    request = wire.decode(raw.data, AlertActionRequested).data
    assert (request.action, request.actor.id, request.actor.name, request.message_id) == (
        "acknowledge",
        ADMIN.open_id,
        "Li Lei",
        card_message,
    )

    # The watchdog's answer to the request (published here as it would publish it).
    changed = AlertStateChanged(
        key=key,
        state="acknowledged",
        level=alert.level,
        source=alert.source,
        title=alert.title,
        detail=alert.detail,
        actor=request.actor,
    )
    state_env = wire.make_envelope(
        changed, id=f"state-{uuid.uuid4().hex}", source="test", tenant=""
    )
    await hub.js.publish(
        subjects.alert_state(key), wire.encode(state_env), headers={H.MSG_ID: state_env.id}
    )
    await fake.wait_until(lambda: len(fake.updates) == 1, 20)
    assert "Acknowledged by Li Lei at" in card_text(fake.card(card_message))
    assert [b.label for b in fake.buttons(card_message)] == ["Silence 1 h", "Resolve"]

    # Someone who is not an admin presses Resolve: told so, audited, nothing changes.
    async with hub.sender() as feishu:
        refused = await feishu.click(fake, OPS_CHAT, "Resolve", user=BYSTANDER)
    assert refused.response.json()["toast"]["type"] == "error"
    await hub.settle()
    audits = await collect(hub.js, subjects.audit(hub.tenant, "alert"), count=1, within_s=10)
    audit = wire.decode(audits[0].data, AuditRecorded).data
    assert (audit.actor, audit.action, audit.outcome) == (
        BYSTANDER.open_id,
        "alert.denied",
        "denied",
    )
    requests = await collect(hub.js, subjects.alert_action(key), within_s=1)
    assert len(requests) == 1  # still only the admin's
    await drained(hub.js, streams.ALERTS.name, "notifier-alert-states")
    assert len(fake.updates) == 1
    assert len(fake.deliveries) == 1


async def test_with_the_watchdog_an_admins_click_acknowledges_the_alert_and_redraws_its_card(
    private_nats_server: NatsServer, redis_url: str, tmp_path: Path
) -> None:
    async with running_hub(private_nats_server.url, redis_url, tmp_path, watchdog=True) as hub:
        alert = AlertRaised(
            level="error",
            source="router",
            title="printer on fire",
            dedupe_key=f"printer:{uuid.uuid4().hex}",
        )
        env = wire.make_envelope(alert, id=f"alert-{uuid.uuid4().hex}", source="test", tenant="")
        await hub.js.publish(
            subjects.alert("error", "router"), wire.encode(env), headers={H.MSG_ID: env.id}
        )
        fake = hub.feishu
        fake.set_departments(ADMIN.open_id, name=ADMIN.name)

        def the_card() -> list[str]:
            return [m for m in fake.cards_in(OPS_CHAT) if alert.title in card_text(fake.card(m))]

        await fake.wait_until(lambda: len(the_card()) == 1, 20)
        [card_message] = the_card()
        async with hub.sender() as feishu:
            await feishu.click(fake, OPS_CHAT, "Acknowledge", user=ADMIN)
        await fake.wait_until(lambda: "Acknowledged by" in card_text(fake.card(card_message)), 30)
        assert "Acknowledged by Li Lei" in card_text(fake.card(card_message))
        assert [b.label for b in fake.buttons(card_message)] == ["Silence 1 h", "Resolve"]
        async with hub.sender() as feishu:
            await feishu.click(fake, OPS_CHAT, "Resolve", user=BYSTANDER)
        await hub.settle()
        await drained(hub.js, streams.ALERTS.name, "notifier-alert-states")
        assert "Resolved" not in card_text(fake.card(card_message))
