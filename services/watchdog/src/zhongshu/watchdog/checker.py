"""Every `check_interval_s`: run each check, raise what is due (once per episode, again after a
silence or as a reminder), resolve the watchdog's open alerts whose condition is gone, and
publish announcements a crash left behind.

A check that fails to run resolves nothing: its alerts stay as they are until it runs again."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.heartbeats import Heartbeat
from zhongshu.runtime.buckets import WatchedBucket
from zhongshu.runtime.bus import Publisher
from zhongshu.runtime.hubconfig import WatchdogConfig
from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.watchdog import metrics
from zhongshu.watchdog.bus import BusCheck
from zhongshu.watchdog.chain import ChainCheck
from zhongshu.watchdog.domain import OPEN, AlertRecord, Finding, cleared, raise_id
from zhongshu.watchdog.host import HostCheck
from zhongshu.watchdog.lifecycle import AlertBook
from zhongshu.watchdog.security import SecurityWatch
from zhongshu.watchdog.services import ServicesCheck

log = logging.getLogger("zhongshu.watchdog.checker")


def family(check: str) -> str:
    """`host.cpu` → `host`: the check run that sees it."""
    return check.split(".", 1)[0]


class Checker:
    def __init__(
        self,
        *,
        config: ConfigSource,
        publisher: Publisher,
        book: AlertBook,
        alerts: WatchedBucket[AlertRecord],
        heartbeats: WatchedBucket[Heartbeat],
        host: HostCheck,
        bus: BusCheck,
        security: SecurityWatch,
        chain: ChainCheck | None = None,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._book = book
        self._alerts = alerts
        self._heartbeats = heartbeats
        self._host = host
        self._services = ServicesCheck()
        self._bus = bus
        self.security = security
        self._chain = chain
        self.last_run = 0.0
        """time.monotonic() of the last completed run (0: none yet)."""

    @property
    def config(self) -> WatchdogConfig:
        return self._config.current.watchdog

    def interval(self) -> float:
        return self.config.check_interval_s

    def healthy(self) -> bool:
        """A run completed recently (readiness)."""
        return bool(self.last_run) and time.monotonic() - self.last_run < 3 * self.interval() + 10

    async def run(self) -> None:
        config = self.config
        now = datetime.now(UTC)
        findings: list[Finding] = []
        ran: set[str] = set()
        down_before = {
            record.labels.get("service", "")
            for record in self._alerts.values()
            if record.watched and record.open and record.labels.get("check") == "service.down"
        }
        runs: tuple[tuple[str, Callable[[], Awaitable[list[Finding]]]], ...] = (
            ("host", lambda: asyncio.to_thread(self._host.run, config, now)),
            ("service", lambda: self._heartbeat_findings(down_before, config, now)),
            ("bus", lambda: self._bus.run(config, now)),
            ("security", lambda: self._security_findings(config, now)),
        )
        if self._chain is not None:
            runs += (("audit", self._chain.run),)
        for name, check in runs:
            try:
                findings += await check()
            except Exception as exc:
                metrics.CHECKS.labels(name, "failed").inc()
                log.warning("check %s failed: %r", name, exc)
                continue
            metrics.CHECKS.labels(name, "ok").inc()
            ran.add(name)
        await self.reconcile(findings, ran, config, now)
        self.last_run = time.monotonic()

    async def _heartbeat_findings(
        self, down_before: set[str], config: WatchdogConfig, now: datetime
    ) -> list[Finding]:
        if not self._heartbeats.ready.is_set():
            raise RuntimeError("the heartbeats bucket is not read yet")
        return self._services.run(self._heartbeats.entries, down_before, config, now)

    async def _security_findings(self, config: WatchdogConfig, now: datetime) -> list[Finding]:
        return self.security.run(config, now)

    async def reconcile(
        self, findings: list[Finding], ran: set[str], config: WatchdogConfig, now: datetime
    ) -> None:
        if not self._alerts.ready.is_set():
            return  # without the current states every decision would be a guess
        present = {finding.key: finding for finding in findings}
        for finding in findings:
            if finding.due:
                await self._raise(finding, config, now)
        for key, held in list(self._alerts.entries.items()):
            record = held.value
            if not record.watched or record.sticky or key in present:
                continue
            if family(record.labels.get("check", "")) not in ran:
                continue
            if record.open or record.hold:
                reason = f"the condition cleared ({record.labels.get('check', 'check')})"
                await self._book.apply(key, functools.partial(cleared, reason=reason, at=now))
        await self._book.sweep(
            {key: (h.value, h.revision, h.written_at) for key, h in self._alerts.entries.items()}
        )
        self._count_open()

    async def _raise(self, finding: Finding, config: WatchdogConfig, now: datetime) -> None:
        held = self._alerts.held(finding.key)
        msg_id = raise_id(finding, held.value if held else None, now, config.remind_s)
        if not msg_id:
            return
        alert = finding.alert()
        envelope = wire.make_envelope(alert, id=msg_id, source="zhongshu/watchdog", tenant="")
        ack = await self._publisher.publish(
            subjects.alert(alert.level, alert.source), wire.encode(envelope), msg_id=msg_id
        )
        if not ack.duplicate:
            metrics.RAISED.labels(alert.level).inc()
            log.warning("raised %s alert %s: %s", alert.level, finding.key, alert.title)

    def _count_open(self) -> None:
        counts = dict.fromkeys(("warning", "error", "critical"), 0)
        for record in self._alerts.values():
            if record.state in OPEN:
                counts[record.level] = counts.get(record.level, 0) + 1
        for level, count in counts.items():
            metrics.ALERTS_ACTIVE.labels(level).set(count)
