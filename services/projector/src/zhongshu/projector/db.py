"""The warm tier's connection pool, migrated before anything writes through it."""

from __future__ import annotations

from typing import Any

import asyncpg

from zhongshu.projector.migrate import migrate
from zhongshu.projector.sessions import reset_session
from zhongshu.runtime.bus import redact_url
from zhongshu.runtime.errors import RuntimeFailure

COMMAND_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
ACQUIRE_TIMEOUT_S = 30.0
"""Waiting longer for a pooled connection means something is stuck: fail (and retry) instead."""


def connection(pool: asyncpg.Pool) -> Any:
    """``pool.acquire()`` that gives up after ``ACQUIRE_TIMEOUT_S`` (asyncpg's own waits forever,
    also inside ``pool.fetch`` and friends)."""
    return pool.acquire(timeout=ACQUIRE_TIMEOUT_S)


async def open_pool(url: str, *, size: int = 4) -> asyncpg.Pool:
    """A pool on ``url`` whose database has every migration; a readable ``RuntimeFailure`` when
    PostgreSQL cannot be reached."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=size,
            command_timeout=COMMAND_TIMEOUT_S,
            timeout=CONNECT_TIMEOUT_S,
            reset=reset_session,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RuntimeFailure(
            f"cannot connect to PostgreSQL at {redact_url(url)} ({type(exc).__name__}: {exc}); "
            "start it with `zhongshu up` or point ZHONGSHU_POSTGRES_URL at a running server"
        ) from exc
    try:
        async with connection(pool) as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
