"""Warm-tier retention: with ``ZHONGSHU_WARM_RETENTION_MONTHS=N`` (0, the default, keeps
everything), rows of finished work older than N whole months are deleted, in batches so no
statement holds locks for long: finished tasks (with their events), finished workflow runs
(with their steps), reply and callback deliveries, and audit rows.

"Older than N whole months" counts calendar months in UTC: on any day of March with N = 1, rows
from before February 1st go, so the current month and the whole previous one stay. Unfinished
tasks and runs stay whatever their age. The cold archive keeps every event regardless.

A replay (or rebuild) of a stream that still holds pruned events writes their rows again; the
next pruning run deletes them again, and ``zhongshu projections rebuild`` prunes when it ends.

Partitioning the append-only tables (``task_events``, ``audit``) by month would make this a
``DROP`` of whole partitions; it needs the month in their primary keys, so it is left for when
the volume asks for it (see the README)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from zhongshu.projector import metrics
from zhongshu.projector.db import connection
from zhongshu.projector.sessions import session_lock

log = logging.getLogger("zhongshu.projector.retention")

LOCK_KEY: Final = 0x7A68_7368_7500_0002  # one pruner at a time across replicas


def cutoff(now: datetime, months: int) -> datetime:
    """The first instant that is kept: midnight UTC on the 1st, ``months`` months before the
    current month's."""
    if months < 1:
        raise ValueError("months must be at least 1")
    now = now.astimezone(UTC)
    index = now.year * 12 + (now.month - 1) - months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Prune:
    """Delete up to $2 rows older than $1; returns one row of counts per table."""

    tables: tuple[str, ...]
    sql: str


_TASKS = _Prune(
    ("tasks", "task_events"),
    """
WITH doomed AS (
    SELECT tenant, task_id FROM tasks
    WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tasks t USING doomed d
    WHERE t.tenant = d.tenant AND t.task_id = d.task_id
    RETURNING t.tenant, t.task_id
), events AS (
    DELETE FROM task_events e USING gone g
    WHERE e.tenant = g.tenant AND e.task_id = g.task_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM events)
""",
)

_RUNS = _Prune(
    ("workflow_runs", "workflow_steps"),
    """
WITH doomed AS (
    SELECT tenant, run_id FROM workflow_runs
    WHERE status IN ('completed', 'failed') AND finished_at < $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM workflow_runs r USING doomed d
    WHERE r.tenant = d.tenant AND r.run_id = d.run_id
    RETURNING r.tenant, r.run_id
), steps AS (
    DELETE FROM workflow_steps s USING gone g
    WHERE s.tenant = g.tenant AND s.run_id = g.run_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM steps)
""",
)


def _by_time(table: str) -> _Prune:
    return _Prune(
        (table,),
        f"""
WITH gone AS (
    DELETE FROM {table} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {table} WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))
    RETURNING 1
)
SELECT count(*) FROM gone
""",
    )


# The audit trail is a hash chain per tenant: only the front of a chain goes (a record older than
# the cutoff stays while a newer one comes before it), and the last position and hash deleted
# become the tenant's anchor, so `zhongshu audit verify` checks the first record left against it.
_AUDIT = _Prune(
    ("audit",),
    """
WITH doomed AS (
    SELECT a.stream_seq FROM audit a
    WHERE a.at < $1 AND NOT EXISTS (
        SELECT 1 FROM audit b WHERE b.tenant = a.tenant AND b.pos < a.pos AND b.at >= $1)
    ORDER BY a.tenant, a.pos LIMIT $2 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM audit a USING doomed d WHERE a.stream_seq = d.stream_seq
    RETURNING a.tenant, a.pos, a.hash
), last AS (
    SELECT DISTINCT ON (tenant) tenant, pos, hash FROM gone WHERE pos IS NOT NULL
    ORDER BY tenant, pos DESC
), anchored AS (
    UPDATE audit_chain c SET anchor_pos = l.pos, anchor_hash = l.hash
    FROM last l WHERE c.tenant = l.tenant AND c.anchor_pos < l.pos
    RETURNING 1
)
SELECT count(*) FROM gone
""",
)

PRUNES: Final = (
    _TASKS,
    _RUNS,
    _by_time("deliveries"),
    _by_time("callback_deliveries"),
    _AUDIT,
)


async def prune(
    pool: asyncpg.Pool, months: int, *, now: datetime | None = None, batch: int = 1000
) -> Counter[str] | None:
    """Delete what is older than ``months`` whole months; returns rows deleted per table, or
    None when another replica is pruning (or ``months`` is 0: retention is off)."""
    if months <= 0:
        return None
    keep_from = cutoff(now or datetime.now(UTC), months)
    deleted: Counter[str] = Counter()
    async with connection(pool) as conn, session_lock(conn, LOCK_KEY, wait=False) as taken:
        if not taken:
            return None
        for step in PRUNES:
            while True:
                row = await conn.fetchrow(step.sql, keep_from, batch)
                counts = dict(zip(step.tables, row, strict=True))
                for table, count in counts.items():
                    if count:
                        deleted[table] += count
                        metrics.ROWS_PRUNED.labels(table).inc(count)
                if counts[step.tables[0]] < batch:
                    break
    if deleted.total():
        log.info("pruned rows from before %s: %s", keep_from.date(), dict(deleted))
    return deleted
