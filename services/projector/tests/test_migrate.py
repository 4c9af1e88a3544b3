"""Migrations: applied in order, once, recorded; several replicas starting at once migrate once."""

from __future__ import annotations

import asyncio

import asyncpg

from services.projector.tests.projector_testing import Bus, settings, start_projector
from zhongshu.projector.migrate import migrate, migrations


async def test_migrations_are_numbered_files_applied_in_order() -> None:
    found = migrations()
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert [(m.version, m.name) for m in found][:2] == [
        (1, "warm_tier"),
        (2, "details_and_retention"),
    ]


async def test_concurrent_migrations_apply_each_file_once(database: str) -> None:
    conns = [await asyncpg.connect(database) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
        assert sorted(m.version for batch in applied for m in batch) == [
            m.version for m in migrations()
        ]
        assert [await migrate(conn) for conn in conns] == [[], [], [], []]
        ledger = await conns[0].fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        assert [(r["version"], r["name"]) for r in ledger] == [
            (m.version, m.name) for m in migrations()
        ]
    finally:
        for conn in conns:
            await conn.close()


async def test_two_projectors_starting_together_migrate_once(
    bus: Bus, database: str, redis_url: str
) -> None:
    config = settings(bus.url, database, redis_url)
    first, second = await asyncio.gather(start_projector(config), start_projector(config))
    try:
        pool: asyncpg.Pool = first.deps.pool
        ledger = await pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in ledger] == [m.version for m in migrations()]
        tables = {
            r["tablename"]
            for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"tasks", "task_events", "workflow_runs", "workflow_steps", "deliveries",
                "callback_deliveries", "audit", "schedules", "triggers", "subscriptions",
                "projection_offsets", "schema_migrations"} <= tables  # fmt: skip
        columns = {
            r["column_name"]
            for r in await pool.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'tasks'"
            )
        }
        assert {"args", "conversation_id", "retryable", "workflow_version"} <= columns
    finally:
        await asyncio.gather(first.stop(), second.stop())
