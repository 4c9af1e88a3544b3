"""What the bus says: dead letters waiting in the DLQ, consumers falling behind, and messages
removed from the audit trail."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from zhongshu.contracts import streams
from zhongshu.runtime.hubconfig import WatchdogConfig
from zhongshu.watchdog.domain import Finding, Growth, TrailMark, trail_breaks

log = logging.getLogger("zhongshu.watchdog.bus")

TRAIL_KEY = "watchdog.audit"
"""The audit trail's last mark, in the `alerts` bucket (two tokens: the watch of alert records,
one token each, does not see it)."""
NEAR_CAP = 0.9


def _stored_at(value: object) -> datetime | None:
    """A stream message's time as nats-py gives it (RFC 3339 with nanoseconds, or a datetime)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python reads at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class BusCheck:
    def __init__(self, js: JetStreamContext, marks: KeyValue) -> None:
        self._js = js
        self._marks = marks
        self._growth = Growth()
        self._mark: TrailMark | None = None
        self._mark_revision = 0

    async def run(self, config: WatchdogConfig, now: datetime) -> list[Finding]:
        findings = await self._dead_letters()
        findings += await self._lag(config, now)
        findings += await self._audit_trail(now)
        return findings

    async def _dead_letters(self) -> list[Finding]:
        info = await self._js.stream_info(streams.DLQ.name)
        waiting = int(info.state.messages or 0)
        if not waiting:
            return []
        return [
            Finding(
                check="bus.dlq",
                subject=streams.DLQ.name,
                level="error",
                title=f"{waiting} dead-lettered message(s) in the DLQ",
                detail="messages consumers gave up on; `zhongshu dlq list` shows them with their "
                "error, `zhongshu dlq replay` sends them back once fixed",
                labels={"messages": str(waiting)},
            )
        ]

    async def _lag(self, config: WatchdogConfig, now: datetime) -> list[Finding]:
        findings: list[Finding] = []
        seen: set[str] = set()
        for stream in streams.STREAMS:
            try:
                consumers = await self._js.consumers_info(stream.name)
            except NotFoundError:
                continue
            for consumer in consumers:
                durable = consumer.config.durable_name if consumer.config else None
                if not durable:
                    continue  # ephemeral readers (tools, tests) are not services
                name = f"{stream.name}/{durable}"
                seen.add(name)
                pending = int(consumer.num_pending or 0)
                growing = self._growth.update(
                    name, pending, now, config.sustained_s, config.lag_min_pending
                )
                if pending < config.lag_min_pending:
                    continue
                findings.append(
                    Finding(
                        check="bus.lag",
                        subject=name,
                        level="warning",
                        title=f"consumer {durable} on {stream.name} is falling behind",
                        detail=f"{pending} message(s) pending, growing for at least "
                        f"{config.sustained_s:g} s",
                        due=growing,
                        labels={
                            "stream": stream.name,
                            "consumer": durable,
                            "pending": str(pending),
                        },
                    )
                )
        self._growth.keep_only(seen)
        return findings

    async def _audit_trail(self, now: datetime) -> list[Finding]:
        info = await self._js.stream_info(streams.AUDIT.name)
        state, config = info.state, info.config
        first_at = None
        if state.messages:
            with contextlib.suppress(NotFoundError):
                first = await self._js.get_msg(streams.AUDIT.name, seq=state.first_seq)
                first_at = _stored_at(first.time)
        mark = TrailMark(
            first_seq=int(state.first_seq or 0),
            last_seq=int(state.last_seq or 0),
            num_deleted=int(state.num_deleted or 0),
            messages=int(state.messages or 0),
            first_at=first_at,
        )
        before = await self._last_mark()
        findings: list[Finding] = []
        if before is not None:
            cap = int(config.max_bytes or -1)
            problems = trail_breaks(
                before,
                mark,
                now=now,
                max_age_s=float(config.max_age or 0),
                near_byte_cap=cap > 0 and int(state.bytes or 0) >= NEAR_CAP * cap,
            )
            if problems:
                findings.append(
                    Finding(
                        check="bus.audit",
                        subject=streams.AUDIT.name,
                        level="critical",
                        title="the audit trail lost messages",
                        detail="; ".join(problems),
                        sticky=True,
                        occurrence=f"{mark.first_seq}-{mark.last_seq}-{mark.num_deleted}",
                        labels={"stream": streams.AUDIT.name},
                    )
                )
        if mark != before:
            await self._save_mark(mark)
        return findings

    async def _last_mark(self) -> TrailMark | None:
        if self._mark is None:
            try:
                entry = await self._marks.get(TRAIL_KEY)
            except KeyNotFoundError:
                return None
            if entry.value:
                self._mark = msgspec.json.decode(entry.value, type=TrailMark)
                self._mark_revision = int(entry.revision or 0)
        return self._mark

    async def _save_mark(self, mark: TrailMark) -> None:
        data = msgspec.json.encode(mark)
        try:
            if self._mark_revision:
                self._mark_revision = int(
                    await self._marks.update(TRAIL_KEY, data, last=self._mark_revision)
                )
            else:
                self._mark_revision = int(await self._marks.create(TRAIL_KEY, data))
        except Exception as exc:  # another replica wrote: read theirs next time
            log.info("audit trail mark not saved (%r); reading it again", exc)
            self._mark, self._mark_revision = None, 0
            return
        self._mark = mark
