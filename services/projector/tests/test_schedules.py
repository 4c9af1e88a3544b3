"""Schedules: the warm tier follows SCHEDULES, including removals no consumer sees (a purged
subject) and tombstones (a message without ``Nats-Schedule``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.projector.tests.projector_testing import (
    SETTLE_LIMIT_S,
    Bus,
    settings,
    settled,
    start_projector,
    unique,
)
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.devstack.testing import eventually


async def define(bus: Bus, tenant: str, schedule_id: str, spec: str) -> None:
    await bus.js.publish(
        subjects.schedule(tenant, schedule_id),
        b'{"id": "template"}',
        headers={H.SCHEDULE: spec, H.SCHEDULE_TARGET: subjects.schedule_fired(tenant, schedule_id)},
    )


async def test_removed_schedules_are_marked_deleted(
    bus: Bus, database: str, redis_url: str
) -> None:
    t = unique("sched")
    await define(bus, t, "purged", "0 0 3 1 1 *")
    await define(bus, t, "tombstoned", "0 0 4 1 1 *")
    config = settings(bus.url, database, redis_url, projector_reconcile_interval_s=0.2)
    service = await start_projector(config)
    try:
        pool: asyncpg.Pool = service.deps.pool
        await settled(service, pool)

        async def deleted() -> dict[str, Any]:
            found = await pool.fetch(
                "SELECT schedule_id, deleted, spec FROM schedules WHERE tenant = $1", t
            )
            return {r["schedule_id"]: (r["deleted"], r["spec"]) for r in found}

        assert await deleted() == {
            "purged": (False, "0 0 3 1 1 *"),
            "tombstoned": (False, "0 0 4 1 1 *"),
        }
        await bus.js.purge_stream(streams.SCHEDULES.name, subject=subjects.schedule(t, "purged"))
        await bus.js.publish(subjects.schedule(t, "tombstoned"), b"")
        await eventually(
            lambda: _equals(deleted, {
                "purged": (True, "0 0 3 1 1 *"),
                "tombstoned": (True, "0 0 4 1 1 *"),
            }),
            "both schedules marked deleted",
            SETTLE_LIMIT_S,
        )  # fmt: skip

        await define(bus, t, "purged", "0 30 3 1 1 *")  # created again
        await eventually(
            lambda: _equals(deleted, {
                "purged": (False, "0 30 3 1 1 *"),
                "tombstoned": (True, "0 0 4 1 1 *"),
            }),
            "the schedule defined again",
            SETTLE_LIMIT_S,
        )  # fmt: skip
    finally:
        await service.stop()


async def _equals(read: Any, expected: dict[str, Any]) -> bool:
    return bool(await read() == expected)
