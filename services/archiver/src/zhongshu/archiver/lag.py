"""How far the archive is behind each stream, and an alert before that costs events.

A stream's limits delete its oldest messages (``max_age``, and ``max_bytes``/``max_msgs`` with
``discard: old``) whether or not they are archived. The oldest unarchived message is the one at
risk: its age over ``max_age`` (or the unarchived share of the byte and message caps, whichever
is higher) is exported per stream, and crossing the warning or error ratio raises an alert. The
monitor reads the resume point from the KV bucket, not from a drain in this process, so it also
watches while the drain is stopped or failing (or runs alone: ``ZHONGSHU_ARCHIVE_DRAIN=false``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from zhongshu.archiver import metrics
from zhongshu.archiver.adapters.statekv import StateStore
from zhongshu.archiver.alerts import Alerts
from zhongshu.contracts.events.alerts import AlertLevel

log = logging.getLogger("zhongshu.archiver.lag")


@dataclass(frozen=True)
class StreamLimits:
    """What the server reports about a stream (``stream_info``): its state and its limits."""

    first_seq: int
    last_seq: int
    messages: int
    bytes: int
    max_age_s: float
    """0 = none."""
    max_bytes: int
    """<= 0 = none."""
    max_msgs: int


@dataclass(frozen=True)
class Lag:
    stream: str
    messages: int
    """Messages after the resume point (deleted ones included: an upper bound)."""
    age_s: float
    """Age of the oldest unarchived message; 0 when there is none."""
    ratio: float
    """Share of the nearest limit used up by the unarchived part; >= 1 means loss."""
    limit: str
    """The limit ``ratio`` refers to: ``max_age``, ``max_bytes``, ``max_msgs`` or ``""``."""


def measure(stream: str, archived: int, limits: StreamLimits, oldest_age_s: float | None) -> Lag:
    """The lag of ``stream`` whose archive ends at ``archived``. Pure."""
    behind_from = max(archived, limits.first_seq - 1)
    unarchived = max(0, limits.last_seq - behind_from)
    if unarchived == 0 or limits.messages == 0:
        return Lag(stream, 0, 0.0, 0.0, "")
    age = max(0.0, oldest_age_s or 0.0)
    ratios = {"max_age": age / limits.max_age_s if limits.max_age_s > 0 else 0.0}
    share = min(1.0, unarchived / limits.messages)
    if limits.max_bytes > 0:
        ratios["max_bytes"] = limits.bytes * share / limits.max_bytes
    if limits.max_msgs > 0:
        ratios["max_msgs"] = unarchived / limits.max_msgs
    limit = max(ratios, key=lambda name: ratios[name])
    return Lag(stream, unarchived, age, ratios[limit], limit if ratios[limit] > 0 else "")


def level_for(ratio: float, warning: float, error: float) -> AlertLevel | None:
    if ratio >= error:
        return "error"
    if ratio >= warning:
        return "warning"
    return None


class LagMonitor:
    def __init__(
        self,
        js: JetStreamContext,
        states: StateStore,
        alerts: Alerts,
        streams: Sequence[str],
        *,
        warning_ratio: float,
        error_ratio: float,
    ) -> None:
        self.js, self.states, self.alerts = js, states, alerts
        self.streams = tuple(streams)
        self.warning_ratio, self.error_ratio = warning_ratio, error_ratio

    async def check(self, now: float | None = None) -> list[Lag]:
        """Measure every stream, export the figures, alert where a ratio is crossed."""
        moment = time.time() if now is None else now
        return [await self.check_stream(stream, moment) for stream in self.streams]

    async def check_stream(self, stream: str, now: float) -> Lag:
        info = await self.js.stream_info(stream)
        config, state = info.config, info.state
        limits = StreamLimits(
            first_seq=int(state.first_seq),
            last_seq=int(state.last_seq),
            messages=int(state.messages),
            bytes=int(state.bytes),
            max_age_s=float(config.max_age or 0),
            max_bytes=int(config.max_bytes or -1),
            max_msgs=int(config.max_msgs or -1),
        )
        archived = (await self.states.load(stream)).archived
        oldest = max(archived + 1, limits.first_seq)
        age: float | None = None
        if oldest <= limits.last_seq:
            with contextlib.suppress(NotFoundError):
                msg = await self.js.get_msg(stream, oldest, subject=">", next=True)
                if msg.time is not None:
                    age = now - msg.time.timestamp()
        lag = measure(stream, archived, limits, age)
        metrics.LAG_MESSAGES.labels(stream).set(lag.messages)
        metrics.LAG_SECONDS.labels(stream).set(lag.age_s)
        metrics.RETENTION_USED.labels(stream).set(lag.ratio)
        level = level_for(lag.ratio, self.warning_ratio, self.error_ratio)
        if level is not None:
            await self._alert(lag, level, limits, now)
        return lag

    async def _alert(self, lag: Lag, level: AlertLevel, limits: StreamLimits, now: float) -> None:
        if lag.limit == "max_age":
            used = (
                f"its oldest unarchived event is {timedelta(seconds=round(lag.age_s))} old, "
                f"{lag.ratio:.0%} of max_age {timedelta(seconds=round(limits.max_age_s))}"
            )
        else:
            used = f"unarchived events fill {lag.ratio:.0%} of the stream's {lag.limit}"
        await self.alerts.raise_once(
            f"lag:{lag.stream}",
            level,
            f"archive of {lag.stream} is falling behind: {lag.messages} event(s) not archived",
            f"{used}; the stream deletes them at 100 % whether archived or not. Check the "
            "archiver's logs and the object store.",
            {"stream": lag.stream, "limit": lag.limit, "ratio": f"{lag.ratio:.3f}"},
            now,
        )
