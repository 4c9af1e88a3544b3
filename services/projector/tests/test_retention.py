"""Warm-tier retention: rows of finished work older than N whole months (UTC) are deleted in
batches, unfinished work stays, and the projector prunes on its own when configured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.projector.tests.projector_testing import (
    SETTLE_LIMIT_S,
    Bus,
    settings,
    start_projector,
    unique,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    AuditRecorded,
    CallbackDelivered,
    Event,
    ReplyDelivered,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
    TaskCompleted,
    TaskRequested,
    TaskStarted,
)
from zhongshu.devstack.testing import eventually
from zhongshu.projector import retention
from zhongshu.projector.projections import Projection
from zhongshu.projector.projections.audit import AuditProjection
from zhongshu.projector.projections.deliveries import DeliveriesProjection
from zhongshu.projector.projections.tasks import TasksProjection
from zhongshu.projector.projections.workflows import WorkflowsProjection
from zhongshu.projector.records import Record
from zhongshu.projector.writer import Planned, apply_batch

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "months", "kept_from"),
    [
        (NOW, 1, datetime(2026, 2, 1, tzinfo=UTC)),
        (NOW, 3, datetime(2025, 12, 1, tzinfo=UTC)),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 1, datetime(2025, 12, 1, tzinfo=UTC)),
        (datetime(2026, 1, 31, 23, 59, tzinfo=UTC), 13, datetime(2024, 12, 1, tzinfo=UTC)),
        # 23:30 on Feb 28th in UTC-1 is already March 1st in UTC.
        (datetime(2026, 2, 28, 23, 30, tzinfo=UTC) + timedelta(hours=1), 1,
         datetime(2026, 2, 1, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_retention_counts_whole_calendar_months_in_utc(
    now: datetime, months: int, kept_from: datetime
) -> None:
    assert retention.cutoff(now, months) == kept_from


class Writer:
    """Writes events straight through the projections (no broker: this is about deleting)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.seq = 0

    async def write(
        self, projection: Projection[Any], subject: str, event: Event, tenant: str, at: datetime
    ) -> None:
        self.seq += 1
        env = wire.make_envelope(event, id=f"e{self.seq}", source="test", tenant=tenant, time=at)
        record = Record(projection.stream, self.seq, subject, wire.encode(env))
        async with self.pool.acquire() as conn, conn.transaction():
            result = await apply_batch(
                conn, projection, [Planned(self.seq, projection.plan(record))]
            )
        assert result.failed == 0

    async def task(
        self, tenant: str, task_id: str, started: datetime, finished: datetime | None
    ) -> None:
        tasks = TasksProjection()
        await self.write(
            tasks,
            subjects.task_requested(tenant),
            TaskRequested(
                task_id=task_id, tenant=tenant, requested_by="u", origin="api", prompt="p"
            ),
            tenant,
            started,
        )
        await self.write(
            tasks,
            subjects.task_event(tenant, task_id),
            TaskStarted(task_id=task_id),
            tenant,
            started,
        )
        if finished is not None:
            await self.write(
                tasks,
                subjects.task_event(tenant, task_id),
                TaskCompleted(task_id=task_id),
                tenant,
                finished,
            )

    async def run(
        self, tenant: str, run_id: str, started: datetime, finished: datetime | None
    ) -> None:
        runs, subject = WorkflowsProjection(), subjects.workflow_run(tenant, run_id)
        await self.write(
            runs, subject, RunStarted(run_id=run_id, tenant=tenant, workflow="w"), tenant, started
        )
        await self.write(runs, subject, StepStarted(run_id=run_id, step="s"), tenant, started)
        await self.write(runs, subject, StepCompleted(run_id=run_id, step="s"), tenant, started)
        if finished is not None:
            await self.write(runs, subject, RunCompleted(run_id=run_id), tenant, finished)


def day(year: int, month: int, d: int, hour: int = 12) -> datetime:
    return datetime(year, month, d, hour, tzinfo=UTC)


async def count(pool: asyncpg.Pool, table: str, tenant: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = $1", tenant))


async def test_finished_rows_older_than_the_retention_are_deleted_in_batches(
    pool: asyncpg.Pool,
) -> None:
    t = unique("prune")
    w = Writer(pool)
    for n in range(5):  # finished in December: deleted, with their events, five in batches of 2
        await w.task(t, f"dec-{n}", day(2025, 12, 10), day(2025, 12, 15 + n))
    await w.task(t, "feb", day(2026, 1, 30), day(2026, 2, 1, 0))  # finished on the boundary
    await w.task(t, "stuck", day(2025, 11, 1), None)  # never finished: kept
    await w.run(t, "old-run", day(2025, 12, 1), day(2025, 12, 2))
    await w.run(t, "open-run", day(2025, 10, 1), None)
    deliveries, audit = DeliveriesProjection(), AuditProjection()
    for reply, when in (("r-old", day(2026, 1, 31, 23)), ("r-new", day(2026, 2, 1, 0))):
        event = ReplyDelivered(reply_id=reply, platform="feishu", delivered_at=when)
        await w.write(deliveries, subjects.delivery("delivered", "feishu", t), event, t, when)
    callback = CallbackDelivered(
        subscription_id="s", tenant=t, event_id="e", event_type="x", status_code=200,
        delivered_at=day(2026, 1, 5),
    )  # fmt: skip
    await w.write(
        deliveries, subjects.delivery("delivered", "callback", t), callback, t, day(2026, 1, 5)
    )
    for n, when in enumerate((day(2026, 1, 31, 23), day(2026, 2, 1, 0))):
        audited = AuditRecorded(
            actor="a", action=f"x.{n}", target="t", outcome="succeeded", tenant=t
        )
        await w.write(audit, subjects.audit(t, "x"), audited, t, when)

    assert await retention.prune(pool, 0, now=NOW) is None  # retention off
    deleted = await retention.prune(pool, 1, now=NOW, batch=2)
    assert deleted == {
        "tasks": 5, "task_events": 15, "workflow_runs": 1, "workflow_steps": 1, "deliveries": 1,
        "callback_deliveries": 1, "audit": 1,
    }  # fmt: skip
    left = await pool.fetch("SELECT task_id FROM tasks WHERE tenant = $1 ORDER BY 1", t)
    assert [r["task_id"] for r in left] == ["feb", "stuck"]
    assert await count(pool, "task_events", t) == 5
    runs = await pool.fetch("SELECT run_id FROM workflow_runs WHERE tenant = $1", t)
    assert [r["run_id"] for r in runs] == ["open-run"]
    assert await count(pool, "workflow_steps", t) == 1
    replies = await pool.fetch("SELECT reply_id FROM deliveries WHERE tenant = $1", t)
    assert [r["reply_id"] for r in replies] == ["r-new"]
    assert await count(pool, "callback_deliveries", t) == 0
    assert await count(pool, "audit", t) == 1
    assert await retention.prune(pool, 1, now=NOW) == {}  # nothing more to do


async def test_only_one_replica_prunes_at_a_time(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as other:
        await other.execute("SELECT pg_advisory_lock($1)", retention.LOCK_KEY)
        try:
            assert await retention.prune(pool, 1, now=NOW) is None
        finally:
            await other.execute("SELECT pg_advisory_unlock($1)", retention.LOCK_KEY)
    assert await retention.prune(pool, 1, now=NOW) is not None


async def test_a_projector_with_retention_prunes_what_it_projected(
    bus: Bus, database: str, redis_url: str
) -> None:
    t = unique("retained")
    long_ago = datetime.now(UTC) - timedelta(days=100)
    for task_id, finished in (("old", long_ago), ("new", datetime.now(UTC))):
        await bus.send(
            subjects.task_event(t, task_id), TaskStarted(task_id=task_id), tenant=t, at=finished
        )
        await bus.send(
            subjects.task_event(t, task_id), TaskCompleted(task_id=task_id), tenant=t, at=finished
        )
    config = settings(
        bus.url, database, redis_url, warm_retention_months=2, warm_retention_interval_s=0.2
    )
    service = await start_projector(config)
    try:
        pool: asyncpg.Pool = service.deps.pool

        async def only_new_left() -> bool:
            found = await pool.fetch("SELECT task_id FROM tasks WHERE tenant = $1", t)
            return [r["task_id"] for r in found] == ["new"]

        await eventually(only_new_left, "the old task to be pruned", SETTLE_LIMIT_S)
        info = await service.js.stream_info(streams.TASKS.name)
        assert info.state.messages == 4  # the bus keeps its events: pruning is the warm tier's
    finally:
        await service.stop()
