"""Reads of the warm tier (PostgreSQL; tables in the projector's migrations): tasks, workflow
runs and their steps, callback deliveries, and the audit trail. Lists are keyset-paginated,
newest first, on a (time, id) pair, so a page never skips or repeats a row while new rows arrive."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from zhongshu.gateway.adapters import Unavailable
from zhongshu.gateway.domain.cursor import After
from zhongshu.runtime import auditstore

Row = dict[str, Any]

_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def _init(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class WarmTier:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> WarmTier:
        # No connection at start (min_size 0): the API keeps creating tasks while PostgreSQL
        # is down, and reads answer 503 until it is back.
        pool = await asyncpg.create_pool(
            url, min_size=0, max_size=10, init=_init, command_timeout=10
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> bool:
        await self._fetch("SELECT 1 AS ok", ())
        return True

    async def task(self, tenant: str, task_id: str) -> Row | None:
        rows = await self._fetch(
            "SELECT * FROM tasks WHERE tenant = $1 AND task_id = $2", (tenant, task_id)
        )
        return rows[0] if rows else None

    async def tasks(
        self,
        tenant: str,
        *,
        status: str | None,
        origin: str | None,
        since: datetime | None,
        after: After,
        limit: int,
    ) -> list[Row]:
        at, last_id = after if after else (None, None)
        return await self._fetch(
            """
            SELECT * FROM tasks
            WHERE tenant = $1
              AND ($2::text IS NULL OR status = $2)
              AND ($3::text IS NULL OR origin = $3)
              AND ($4::timestamptz IS NULL OR created_at >= $4)
              AND ($5::timestamptz IS NULL OR (created_at, task_id) < ($5, $6::text))
            ORDER BY created_at DESC, task_id DESC
            LIMIT $7
            """,
            (tenant, status, origin, since, at, last_id, limit),
        )

    async def runs(self, tenant: str, workflow: str, *, after: After, limit: int) -> list[Row]:
        at, last_id = after if after else (None, None)
        return await self._fetch(
            """
            SELECT * FROM workflow_runs
            WHERE tenant = $1 AND workflow = $2
              AND ($3::timestamptz IS NULL OR (started_at, run_id) < ($3, $4::text))
            ORDER BY started_at DESC, run_id DESC
            LIMIT $5
            """,
            (tenant, workflow, at, last_id, limit),
        )

    async def run(self, tenant: str, workflow: str, run_id: str) -> tuple[Row, list[Row]] | None:
        runs = await self._fetch(
            "SELECT * FROM workflow_runs WHERE tenant = $1 AND workflow = $2 AND run_id = $3",
            (tenant, workflow, run_id),
        )
        if not runs:
            return None
        steps = await self._fetch(
            """
            SELECT * FROM workflow_steps WHERE tenant = $1 AND run_id = $2
            ORDER BY started_at NULLS LAST, step
            """,
            (tenant, run_id),
        )
        return runs[0], steps

    async def deliveries(
        self, tenant: str, subscription_id: str, *, after: After, limit: int
    ) -> list[Row]:
        at, last_id = after if after else (None, None)
        return await self._fetch(
            """
            SELECT * FROM callback_deliveries
            WHERE tenant = $1 AND subscription_id = $2
              AND ($3::timestamptz IS NULL OR (at, event_id) < ($3, $4::text))
            ORDER BY at DESC, event_id DESC
            LIMIT $5
            """,
            (tenant, subscription_id, at, last_id, limit),
        )

    async def audit(
        self,
        tenant: str,
        *,
        since: datetime | None,
        action: str | None,
        actor: str | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[Row]:
        filters = auditstore.Filters(tenant=tenant, since=since, action=action, actor=actor)
        try:
            async with self._pool.acquire(timeout=5) as conn:
                return await auditstore.newest_first(conn, filters, after=after, limit=limit)
        except _FAILURES as exc:
            name = type(exc).__name__
            raise Unavailable(f"the warm tier (PostgreSQL) cannot be read ({name})") from exc

    async def _fetch(self, query: str, args: Sequence[Any]) -> list[Row]:
        try:
            async with self._pool.acquire(timeout=5) as conn:
                records = await conn.fetch(query, *args)
        except _FAILURES as exc:
            name = type(exc).__name__
            raise Unavailable(f"the warm tier (PostgreSQL) cannot be read ({name})") from exc
        return [dict(r) for r in records]
