"""How far behind each read model is: the last sequence among the subjects a projection reads,
minus the last one it applied (``projection_offsets``, so every replica reports the same).
Exported as ``zhongshu_projector_lag{stream}``; KEDA or an alert rule can act on it."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import asyncpg
import nats.js.errors
from nats.js.client import JetStreamContext

from zhongshu.projector import metrics
from zhongshu.projector.db import connection


async def last_sequence(js: JetStreamContext, stream: str, filters: Sequence[str]) -> int:
    """The newest sequence in ``stream`` on any of ``filters`` (0 when none)."""
    last = 0
    for subject in filters:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            found = await js.get_last_msg(stream, subject)
            last = max(last, int(found.seq or 0))
    return last


async def refresh(
    js: JetStreamContext, pool: asyncpg.Pool, sources: Sequence[tuple[str, Sequence[str]]]
) -> dict[str, int]:
    """Update the gauges for each (stream, subject filters); returns the lag per stream."""
    async with connection(pool) as conn:
        rows = await conn.fetch("SELECT stream, last_seq FROM projection_offsets")
    applied = {row["stream"]: int(row["last_seq"]) for row in rows}
    lags: dict[str, int] = {}
    for stream, filters in sources:
        last = await last_sequence(js, stream, filters)
        done = applied.get(stream, 0)
        lags[stream] = max(0, last - done)
        metrics.STREAM_LAST_SEQ.labels(stream).set(last)
        metrics.APPLIED_SEQ.labels(stream).set(done)
        metrics.LAG.labels(stream).set(lags[stream])
    return lags
