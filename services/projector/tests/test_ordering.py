"""Order and failure: a message Postgres or the decoder rejects goes to the DLQ alone (the rest
of its batch is written), writes wait for PostgreSQL to come back instead of letting newer
messages overtake them, and the lag gauges say how far behind the read models are."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from prometheus_client import REGISTRY

from services.projector.tests.projector_testing import (
    SETTLE_LIMIT_S,
    SOURCES,
    Bus,
    settings,
    settled,
    start_projector,
    unique,
)
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import (
    StepRequested,
    TaskCompleted,
    TaskProgressed,
    TaskRequested,
    TaskStarted,
)
from zhongshu.devstack import PostgresServer
from zhongshu.devstack.testing import collect, eventually
from zhongshu.projector import lag


def requested(tenant: str, task_id: str, prompt: str = "hello") -> TaskRequested:
    return TaskRequested(
        task_id=task_id, tenant=tenant, requested_by="u", origin="api", prompt=prompt
    )


async def test_a_message_postgres_rejects_is_dead_lettered_and_its_batch_is_written(
    bus: Bus, database: str, redis_url: str
) -> None:
    tenant = unique("poison")
    await bus.send(subjects.task_requested(tenant), requested(tenant, "good"), tenant=tenant)
    # PostgreSQL text cannot hold NUL: this one fails inside the batch's transaction.
    await bus.send(
        subjects.task_requested(tenant), requested(tenant, "nul", "bad\x00prompt"), tenant=tenant
    )
    await bus.send(subjects.task_event(tenant, "good"), TaskStarted(task_id="good"), tenant=tenant)
    # Not an envelope at all: refused before any write.
    await bus.js.publish(
        subjects.task_event(tenant, "junk"), b"not an envelope", headers={H.MSG_ID: "junk"}
    )
    last = await bus.send(
        subjects.task_event(tenant, "good"),
        TaskCompleted(task_id="good", result_text="fine"),
        tenant=tenant,
    )
    service = await start_projector(settings(bus.url, database, redis_url))
    try:
        pool: asyncpg.Pool = service.deps.pool
        await settled(service, pool)
        found = await pool.fetch("SELECT task_id, status FROM tasks WHERE tenant = $1", tenant)
        assert [(r["task_id"], r["status"]) for r in found] == [("good", "completed")]
        events = await pool.fetchval(
            "SELECT count(*) FROM task_events WHERE tenant = $1 AND task_id = 'good'", tenant
        )
        assert events == 3
        assert (
            await pool.fetchval("SELECT last_seq FROM projection_offsets WHERE stream = 'TASKS'")
            == last
        )
        dead = await collect(bus.js, subjects.dlq("TASKS", "projector-tasks"), count=2)
        assert sorted(m.headers[H.DLQ_SUBJECT] for m in dead if m.headers) == sorted(
            [subjects.task_requested(tenant), subjects.task_event(tenant, "junk")]
        )
    finally:
        await service.stop()


async def test_writes_wait_while_postgres_is_down_and_lose_nothing(
    bus: Bus, redis_url: str, server_dir: Path
) -> None:
    tenant = unique("outage")
    with PostgresServer(server_dir / "pg", log_path=server_dir / "pg.log") as pg:
        service = await start_projector(settings(bus.url, pg.url, redis_url, ack_wait_s=1.5))
        try:
            pool: asyncpg.Pool = service.deps.pool
            await bus.send(subjects.task_requested(tenant), requested(tenant, "t"), tenant=tenant)
            await settled(service, pool)
            retried_before = write_retries()

            await asyncio.to_thread(pg.stop)
            await bus.send(
                subjects.task_event(tenant, "t"), TaskStarted(task_id="t"), tenant=tenant
            )
            for seq in range(1, 21):
                await bus.send(
                    subjects.task_event(tenant, "t"),
                    TaskProgressed(task_id="t", seq=seq, chunk=f"part {seq}"),
                    tenant=tenant,
                )
            await bus.send(
                subjects.task_event(tenant, "t"),
                TaskCompleted(task_id="t", result_text="all parts"),
                tenant=tenant,
            )
            # Held past ack_wait (1.5 s) while the writer retries in place.
            await eventually(
                lambda: _gt(write_retries(), retried_before + 3), "write retries", SETTLE_LIMIT_S
            )
            await asyncio.to_thread(pg.start)

            await settled(service, pool)
            row = await pool.fetchrow(
                "SELECT status, result_text FROM tasks WHERE tenant = $1 AND task_id = 't'", tenant
            )
            assert (row["status"], row["result_text"]) == ("completed", "all parts")
            assert (
                await pool.fetchval("SELECT count(*) FROM task_events WHERE tenant = $1", tenant)
                == 23
            )
            info = await service.js.consumer_info("TASKS", "projector-tasks")
            assert info.num_redelivered == 0  # kept alive, not handed to anyone else
        finally:
            await service.stop()


def write_retries() -> float:
    return (
        REGISTRY.get_sample_value("zhongshu_projector_write_retries_total", {"what": "write TASKS"})
        or 0.0
    )


async def _gt(value: float, floor: float) -> bool:
    return value > floor


async def test_lag_counts_the_messages_not_yet_applied(
    bus: Bus, pool: asyncpg.Pool, database: str, redis_url: str
) -> None:
    tenant = unique("lag")
    for n in range(3):
        await bus.send(subjects.task_requested(tenant), requested(tenant, f"l-{n}"), tenant=tenant)
    # Step work shares WORKFLOWS with run events, but the projector does not read it.
    await bus.send(
        subjects.workflow_step(tenant, "r", "s"),
        StepRequested(run_id="r", tenant=tenant, workflow="w", step="s", kind="collect"),
        tenant=tenant,
    )
    lags = await lag.refresh(bus.js, pool, SOURCES)
    assert (lags["TASKS"], lags["WORKFLOWS"]) == (3, 0)
    assert REGISTRY.get_sample_value("zhongshu_projector_lag", {"stream": "TASKS"}) == 3
    written_before = rows_written("tasks")
    service = await start_projector(settings(bus.url, database, redis_url))
    try:
        await settled(service, service.deps.pool)
        assert (await lag.refresh(bus.js, pool, SOURCES))["TASKS"] == 0
        assert rows_written("tasks") == written_before + 3
    finally:
        await service.stop()


def rows_written(table: str) -> float:
    value = REGISTRY.get_sample_value("zhongshu_projector_rows_written_total", {"table": table})
    return value or 0.0
