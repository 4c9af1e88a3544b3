"""The watchdog end to end, on a JetStream of the test's own: a service killed with SIGKILL is an
error alert in the fake Feishu's alert chat (through the notifier) within the grace period, and
resolved when it is back; 20 badly signed Feishu webhooks from one source are a critical alert.

Thresholds are seconds instead of minutes; waits are generous bounds, not timings. The alert
card's buttons are the notifier's; its redraw as resolved is asserted here."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import AlertStateChanged, alert_key
from zhongshu.contracts.streams import HEARTBEATS_KV
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.feishu import FeishuEventSender
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI, card_text
from zhongshu.devstack.testing import eventually, provision_all
from zhongshu.ingress_feishu.main import build_service as build_ingress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.notifier.main import build_service as build_notifier
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime.hubconfig import HubConfig, WatchdogConfig
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service
from zhongshu.watchdog.main import build_service as build_watchdog
from zhongshu.watchdog.settings import WatchdogSettings

ALERT_CHAT = "oc_alerts"
ENCRYPT_KEY, TOKEN = "enc-key-for-watchdog-e2e", "verification-token-for-watchdog-e2e"
WAIT_S = 60.0
FAST = WatchdogConfig(
    check_interval_s=0.25, down_after_s=1.5, grace_s=1.0, sustained_s=1.0, remind_s=0
)


@dataclass
class Hub:
    """The test's bus, fake Feishu, and what was published on ALERTS."""

    url: str
    js: JetStreamContext
    feishu: FakeFeishuOpenAPI
    config_path: Path
    raised: list[AlertRaised] = field(default_factory=list)
    changes: list[AlertStateChanged] = field(default_factory=list)

    def alerts(self, check: str) -> list[AlertRaised]:
        return [a for a in self.raised if a.labels.get("check") == check]

    def states(self, key: str, state: str) -> list[AlertStateChanged]:
        return [c for c in self.changes if c.key == key and c.state == state]

    def cards(self, text: str) -> list[str]:
        """Messages the app sent to the alert chat that mention ``text``."""
        return [
            d.text for d in self.feishu.deliveries if d.chat_id == ALERT_CHAT and text in d.text
        ]


@pytest_asyncio.fixture
async def hub(tmp_path: Path, redis_url: str) -> AsyncIterator[Hub]:
    run = uuid.uuid4().hex[:8]
    async with FakeFeishuOpenAPI(app_id=f"cli_{run}", app_secret=f"secret-{run}") as feishu:
        with NatsServer(tmp_path / "nats", sync_always=False) as server:
            await provision_all(server.url)
            client = await nats.connect(server.url)
            config = tmp_path / "zhongshu.yaml"
            config.write_text(
                f"""
tenants: {{acme: {{}}}}
apps:
  lark:
    tenant: acme
    platform: feishu
    feishu: {{app_id: {feishu.app_id}, app_secret: {feishu.app_secret},
             encrypt_key: {ENCRYPT_KEY}, verification_token: {TOKEN}}}
alerts:
  error: [{{app: lark, chat: {ALERT_CHAT}}}]
  critical: [{{app: lark, chat: {ALERT_CHAT}}}]
"""
            )
            hub = Hub(server.url, client.jetstream(), feishu, config)

            async def on_alert(msg: Msg) -> None:
                hub.raised.append(wire.decode(msg.data, AlertRaised).data)

            async def on_change(msg: Msg) -> None:
                hub.changes.append(wire.decode(msg.data, AlertStateChanged).data)

            subs = [
                await hub.js.subscribe(subjects.ALL_ALERTS, cb=on_alert, ordered_consumer=True),
                await hub.js.subscribe(
                    subjects.ALL_ALERT_STATES, cb=on_change, ordered_consumer=True
                ),
            ]
            started: list[Service] = []
            try:
                hub_config = HubConfig.model_validate(
                    {**_yaml(config), "watchdog": FAST.model_dump()}
                )
                notifier = build_notifier(config=hub_config)
                await notifier.start(
                    NotifierSettings(
                        nats_url=server.url,
                        redis_url=redis_url,
                        feishu_base_url=feishu.base_url,
                        uvloop=False,
                        drain_timeout_s=5,
                    )
                )
                started.append(notifier)
                watchdog = build_watchdog(config=StaticConfig(hub_config))
                await watchdog.start(
                    WatchdogSettings(nats_url=server.url, watchdog_disks=[], uvloop=False)
                )
                started.append(watchdog)
                yield hub
            finally:
                for service in reversed(started):
                    await service.stop()
                for sub in subs:
                    await sub.unsubscribe()
                await client.close()


def _yaml(path: Path) -> dict[str, object]:
    import yaml

    loaded: dict[str, object] = yaml.safe_load(path.read_text())
    return loaded


class EchoProcess:
    """A real service process (echo), beating every 0.2 s, to kill."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zhongshu.echo.main"],
            env={
                **os.environ,
                "ZHONGSHU_NATS_URL": url,
                "ZHONGSHU_HEARTBEAT_INTERVAL_S": "0.2",
            },
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if re.match(r"READY echo\b", line):
                self.ready.set()

    async def started(self, js: JetStreamContext) -> EchoProcess:
        assert await asyncio.to_thread(self.ready.wait, WAIT_S), "echo did not start"

        async def beating() -> bool:
            kv = await js.key_value(HEARTBEATS_KV.bucket)
            try:
                return any(k.startswith("echo.") for k in await kv.keys())
            except Exception:  # no keys yet
                return False

        await eventually(beating, "echo's heartbeat", WAIT_S)
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def test_a_killed_service_is_an_error_in_the_alert_chat_and_resolved_when_back(
    hub: Hub,
) -> None:
    echo = await EchoProcess(hub.url).started(hub.js)
    try:
        echo.kill()
        down = await eventually(lambda: hub.alerts("service.down"), "echo down", WAIT_S)
        assert (down[0].level, down[0].title) == ("error", "echo is down")
        await eventually(lambda: hub.cards("echo is down"), "the alert in the chat", WAIT_S)

        echo = await EchoProcess(hub.url).started(hub.js)
        key = alert_key(down[0])
        resolved = await eventually(lambda: hub.states(key, "resolved"), "resolved", WAIT_S)
        assert resolved[0].actor is None

        # The card in the chat is redrawn in place: resolved, no buttons left to press.
        def resolved_cards() -> list[str]:
            return [
                m
                for m in hub.feishu.cards_in(ALERT_CHAT)
                if "echo is down" in card_text(hub.feishu.card(m))
                and "Resolved automatically" in card_text(hub.feishu.card(m))
            ]

        redrawn = await eventually(resolved_cards, "the card redrawn as resolved", WAIT_S)
        assert hub.feishu.buttons(redrawn[0]) == []
    finally:
        echo.kill()


async def test_twenty_badly_signed_feishu_webhooks_from_one_source_are_a_critical(
    hub: Hub,
) -> None:
    ingress = build_ingress()
    await ingress.start(
        FeishuIngressSettings(nats_url=hub.url, config_path=hub.config_path, uvloop=False)
    )
    try:
        base_url = f"http://127.0.0.1:{ingress.health_port}"
        async with FeishuEventSender(
            base_url, "lark", encrypt_key="not-the-key", verification_token=TOKEN
        ) as forger:
            for i in range(20):
                answer = await forger.send(forger.message(text=f"let me in {i}"))
                assert not answer.acknowledged
        burst = await eventually(
            lambda: [a for a in hub.alerts("security.signature") if a.level == "critical"],
            "a critical alert",
            WAIT_S,
        )
        assert burst[0].labels["remote"] == "127.0.0.1"
        assert burst[0].labels["platform"] == "feishu"
        await eventually(lambda: hub.cards("refused webhook signatures"), "in the chat", WAIT_S)
    finally:
        await ingress.stop()
