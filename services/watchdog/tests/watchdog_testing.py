"""What the watchdog's tests share: a watchdog in this process with short thresholds, a recorder
of the alerts and state changes it publishes, publishing alerts and actions as their producers
do, and real service processes to kill."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import (
    AlertActionRequested,
    AlertActor,
    AlertStateChanged,
    alert_key,
)
from zhongshu.contracts.streams import ALERTS_KV, HEARTBEATS_KV
from zhongshu.devstack.testing import eventually
from zhongshu.runtime.hubconfig import HubConfig, WatchdogConfig
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.watchdog.domain import AlertRecord
from zhongshu.watchdog.lifecycle import decode_record
from zhongshu.watchdog.main import build_service
from zhongshu.watchdog.resources import WatchdogService
from zhongshu.watchdog.settings import WatchdogSettings

ADMIN = AlertActor(id="ou_admin", name="Ada Admin", platform="feishu", app="ops-bot")
FAST = WatchdogConfig(
    check_interval_s=0.2,
    down_after_s=1.5,
    grace_s=1.0,
    sustained_s=1.0,
    remind_s=0,
)
"""Seconds instead of minutes: each test still waits generously for what it expects."""
WAIT_S = 30.0


async def start_watchdog(
    url: str, config: WatchdogConfig = FAST, *, disks: Sequence[Path] = ()
) -> WatchdogService:
    service = build_service(config=StaticConfig(HubConfig(watchdog=config)))
    await service.start(
        WatchdogSettings(nats_url=url, watchdog_disks=list(disks), heartbeat_interval_s=0)
    )
    return service


@dataclass
class Recorder:
    """Every AlertRaised and AlertStateChanged stored on the bus, as they arrive (an ordered
    consumer from the start of the ALERTS stream)."""

    raised: list[tuple[str, AlertRaised]] = field(default_factory=list)
    """(Nats-Msg-Id, alert)"""
    changes: list[AlertStateChanged] = field(default_factory=list)
    subscriptions: list[Any] = field(default_factory=list)

    async def start(self, js: JetStreamContext) -> Recorder:
        async def on_alert(msg: Msg) -> None:
            env = wire.decode(msg.data, AlertRaised)
            self.raised.append((env.id, env.data))

        async def on_change(msg: Msg) -> None:
            self.changes.append(wire.decode(msg.data, AlertStateChanged).data)

        self.subscriptions = [
            await js.subscribe(subjects.ALL_ALERTS, cb=on_alert, ordered_consumer=True),
            await js.subscribe(subjects.ALL_ALERT_STATES, cb=on_change, ordered_consumer=True),
        ]
        return self

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.unsubscribe()

    def alerts(self, check: str, **labels: str) -> list[AlertRaised]:
        return [
            alert
            for _, alert in self.raised
            if alert.labels.get("check") == check
            and all(alert.labels.get(k) == v for k, v in labels.items())
        ]

    def states(self, key: str, state: str | None = None) -> list[AlertStateChanged]:
        return [c for c in self.changes if c.key == key and (state is None or c.state == state)]


async def record_of(js: JetStreamContext, key: str) -> AlertRecord | None:
    kv = await js.key_value(ALERTS_KV.bucket)
    try:
        entry = await kv.get(key)
    except Exception:
        return None
    return decode_record(entry.value) if entry.value else None


async def publish_alert(js: JetStreamContext, alert: AlertRaised, msg_id: str = "") -> str:
    """An alert as another service raises it; returns its key."""
    env = wire.make_envelope(alert, id=msg_id or uuid.uuid4().hex, source="test", tenant="")
    await js.publish(
        subjects.alert(alert.level, alert.source),
        wire.encode(env),
        headers={"Nats-Msg-Id": env.id},
    )
    return alert_key(alert)


async def press(
    js: JetStreamContext, key: str, action: str, *, silence_s: int = 3600, actor: AlertActor = ADMIN
) -> None:
    """An admin's click on an alert card, as the router publishes it."""
    requested = AlertActionRequested(
        key=key,
        action=action,  # type: ignore[arg-type]
        actor=actor,
        silence_s=silence_s,
    )
    env = wire.make_envelope(requested, id=uuid.uuid4().hex, source="test", tenant="")
    await js.publish(subjects.alert_action(key), wire.encode(env), headers={"Nats-Msg-Id": env.id})


class ServiceProcess:
    """A service as a real process (``python -m <module>`` or a script), beating every 0.2 s."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, "ZHONGSHU_HEARTBEAT_INTERVAL_S": "0.2", **env},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if re.match(rf"READY {self.name}\b", line):
                self.ready.set()

    async def wait_ready(self, within_s: float = WAIT_S) -> ServiceProcess:
        if not await asyncio.to_thread(self.ready.wait, within_s):
            self.kill()
            raise AssertionError(f"{self.name} did not start:\n" + "".join(self.lines[-20:]))
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def beating(js: JetStreamContext, service: str) -> None:
    """Wait until ``service`` has written a heartbeat (a process killed before its first beat
    is one the watchdog never knew)."""

    async def found() -> bool:
        kv = await js.key_value(HEARTBEATS_KV.bucket)
        try:
            keys = await kv.keys()
        except Exception:  # no keys yet
            return False
        return any(key.startswith(f"{service}.") for key in keys)

    await eventually(found, f"a heartbeat from {service}", WAIT_S)
