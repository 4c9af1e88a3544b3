"""Rebuilding read models from their streams (``zhongshu projections rebuild``).

One source at a time, in one transaction: empty the tables it owns (``DELETE``, so readers keep
seeing the old rows until the new ones commit) and its ``projection_offsets`` row, then replay
the stream from sequence 1 through a temporary consumer and the same ``plan``/``apply`` code the
live projector runs. The transaction holds the stream's advisory lock exclusively, so a running
projector's writes to those tables wait for it and then find their messages already applied.
A failed rebuild rolls back and leaves the read models as they were.

Without truncation the same replay verifies idempotency: messages the projector had already
applied must change no row (``RebuildReport.changed_applied`` counts those that did)."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from zhongshu.projector import retention
from zhongshu.projector.db import connection
from zhongshu.projector.hot import HotStatus, HotTier
from zhongshu.projector.projections import Projection, all_projections
from zhongshu.projector.projections import definitions as kv
from zhongshu.projector.records import Record
from zhongshu.projector.writer import LOCK_EXCLUSIVE, Planned, advance, apply_batch

BATCH = 500
HOT_CHUNK = 500
FETCH_TIMEOUT_S = 1.0
EMPTY_TIMEOUT_S = 3600.0  # emptying a large table takes longer than one upsert's timeout

Progress = Callable[[str, int, int], None]
"""Called with (source, messages replayed so far, messages to replay as known now)."""


@dataclass
class RebuildReport:
    source: str
    truncated: bool
    messages: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    changed_applied: int = 0
    """Rows changed by messages applied before the replay (must be 0: replays are idempotent)."""
    failed: int = 0
    first_error: str | None = None
    seconds: float = 0.0

    def failure(self, error: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(error).__name__}: {error}"


def source_names() -> list[str]:
    """Every source a rebuild knows: the streams, then the KV buckets' streams."""
    return [p.stream for p in all_projections()] + [m.stream for m in kv.MIRRORS]


def resolve(name: str | None) -> tuple[list[Projection[Any]], list[kv.Mirror]]:
    """The projections and mirrors ``name`` selects (all of them for None). Accepts a stream
    name in any case, a bucket name, or ``KV_<bucket>``; ``KeyError`` for anything else."""
    projections, mirrors = list(all_projections()), list(kv.MIRRORS)
    if name is None:
        return projections, mirrors
    wanted = name.strip().lower()
    chosen_p = [p for p in projections if p.stream.lower() == wanted]
    chosen_m = [m for m in mirrors if wanted in (m.stream.lower(), m.bucket.lower())]
    if not chosen_p and not chosen_m:
        raise KeyError(f"unknown source {name!r}; choose one of {', '.join(source_names())}")
    return chosen_p, chosen_m


async def rebuild(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    *,
    only: str | None = None,
    truncate: bool = True,
    hot: HotTier | None = None,
    progress: Progress | None = None,
    retention_months: int = 0,
) -> list[RebuildReport]:
    """Rebuild every source (or ``only`` one); prunes afterwards when retention is on."""
    projections, mirrors = resolve(only)
    reports = [
        await rebuild_stream(js, pool, p, truncate=truncate, hot=hot, progress=progress)
        for p in projections
    ]
    reports += [
        await rebuild_mirror(js, pool, m, truncate=truncate, progress=progress) for m in mirrors
    ]
    if retention_months > 0:
        await retention.prune(pool, retention_months)
    return reports


async def rebuild_stream(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    projection: Projection[Any],
    *,
    truncate: bool = True,
    hot: HotTier | None = None,
    progress: Progress | None = None,
) -> RebuildReport:
    stream = projection.stream
    report = RebuildReport(stream, truncate)
    started = time.monotonic()
    statuses: dict[tuple[str, str], HotStatus] = {}
    async with connection(pool) as conn, conn.transaction():
        applied_before = await _reset(conn, stream, projection.tables, truncate)
        replay = await _Replay.open(js, stream, projection.subjects)
        try:
            last = 0
            async for records in replay.batches():
                planned: list[Planned] = []
                for record in records:
                    try:
                        planned.append(Planned(record.seq, projection.plan(record)))
                    except Exception as exc:
                        report.failure(exc)
                old = [p for p in planned if p.seq <= applied_before]
                new = [p for p in planned if p.seq > applied_before]
                for part in (old, new):
                    if not part:
                        continue
                    result = await apply_batch(conn, projection, part)
                    for item in part:
                        if item.error is not None:
                            report.failure(item.error)
                    report.rows.update(result.applied.rows)
                    if part is old:
                        report.changed_applied += result.applied.total
                    for status in result.applied.statuses:
                        statuses[(status.tenant, status.status.task_id)] = status
                report.messages += len(records)
                last = max(last, records[-1].seq)
                if progress is not None:
                    progress(stream, report.messages, report.messages + replay.pending)
            if last:
                await advance(conn, stream, last)
        finally:
            await replay.close()
    if hot is not None and statuses:
        values = list(statuses.values())
        for start in range(0, len(values), HOT_CHUNK):
            await hot.put(values[start : start + HOT_CHUNK])
    report.seconds = time.monotonic() - started
    return report


async def rebuild_mirror(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    mirror: kv.Mirror,
    *,
    truncate: bool = True,
    progress: Progress | None = None,
) -> RebuildReport:
    report = RebuildReport(mirror.stream, truncate)
    started = time.monotonic()
    bucket = await js.key_value(mirror.bucket)
    async with connection(pool) as conn, conn.transaction():
        applied_before = await _reset(conn, mirror.stream, mirror.tables, truncate)
        watcher = await bucket.watchall(include_history=True)
        try:
            async for entry in watcher:
                if entry is None:  # every current entry has been read
                    break
                report.messages += 1
                change = kv.plan(entry)
                if change is not None:
                    rows = await kv.apply(conn, mirror, change)
                    report.rows[mirror.table] += rows
                    if change.revision <= applied_before:
                        report.changed_applied += rows
                if progress is not None:
                    progress(
                        mirror.stream, report.messages, report.messages + int(entry.delta or 0)
                    )
        finally:
            await cast(Any, watcher).stop()  # untyped in nats-py
    report.seconds = time.monotonic() - started
    return report


async def _reset(
    conn: asyncpg.Connection, stream: str, tables: Sequence[str], truncate: bool
) -> int:
    """Take the stream's lock; empty its tables when truncating. Returns the sequence applied
    before (0 after truncation)."""
    await conn.execute(LOCK_EXCLUSIVE, stream)
    if not truncate:
        applied = await conn.fetchval(
            "SELECT last_seq FROM projection_offsets WHERE stream = $1", stream
        )
        return int(applied or 0)
    for table in tables:  # DELETE, not TRUNCATE: readers keep the old rows until the commit
        await conn.execute(f"DELETE FROM {table}", timeout=EMPTY_TIMEOUT_S)
    await conn.execute("DELETE FROM projection_offsets WHERE stream = $1", stream)
    return 0


class _Replay:
    """A temporary pull consumer reading a stream from sequence 1 (no acks: nothing to redo)."""

    def __init__(self, js: JetStreamContext, stream: str, name: str, pending: int) -> None:
        self._js = js
        self._stream = stream
        self._name = name
        self.pending = pending
        self._sub: JetStreamContext.PullSubscription | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, stream: str, filters: Sequence[str]) -> _Replay:
        name = f"projector-rebuild-{stream.lower()}-{secrets.token_hex(4)}"
        one = len(filters) == 1
        info = await js.add_consumer(
            stream,
            ConsumerConfig(
                name=name,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                filter_subject=filters[0] if one else None,
                filter_subjects=None if one else list(filters),
                inactive_threshold=300.0,
                mem_storage=True,
            ),
        )
        replay = cls(js, stream, name, int(info.num_pending or 0))
        replay._sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
        return replay

    async def batches(self) -> AsyncIterator[list[Record]]:
        """Fetched messages as records, until none is left. Each fetch asks for no more than
        the consumer has pending, so it returns as soon as they arrive."""
        assert self._sub is not None
        while True:
            if self.pending <= 0:
                info = await self._sub.consumer_info()
                self.pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                if self.pending == 0:
                    return
            try:
                msgs = await self._sub.fetch(min(BATCH, self.pending), timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                self.pending = 0  # look again
                continue
            self.pending -= len(msgs)
            yield [Record.of(self._stream, m) for m in msgs]

    async def close(self) -> None:
        # Best effort: an ephemeral consumer left behind expires by itself (inactive_threshold).
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self._js.delete_consumer(self._stream, self._name)
