"""The live writer's transactions against PostgreSQL: batched upserts keep each row's changes in
stream order, and pooled connections carry no session lock to their next user."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from zhongshu.projector.projections import Applied
from zhongshu.projector.projections.deliveries import DeliveriesProjection, DeliveryChange
from zhongshu.projector.sessions import session_lock

AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def reply(reply_id: str, status: str, seq: int, message_id: str | None = None) -> DeliveryChange:
    return DeliveryChange(
        "deliveries",
        (reply_id, 0, "acme", "feishu", "app", "chat", status, None, None, 1, message_id, AT, seq),
    )


async def test_a_reply_changed_twice_in_one_batch_ends_with_its_newer_outcome(
    pool: asyncpg.Pool,
) -> None:
    changes = [
        reply("r-1", "ambiguous", 5),
        reply("r-2", "delivered", 6, "om-2"),
        reply("r-1", "delivered", 7, "om-1"),
    ]
    applied = Applied()
    async with pool.acquire() as conn, conn.transaction():
        await DeliveriesProjection().apply_all(conn, changes, applied)
        await DeliveriesProjection().apply_all(conn, [reply("r-2", "failed", 4)], applied)
    rows = await pool.fetch(
        "SELECT reply_id, status, platform_message_id, last_seq FROM deliveries ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [
        ("r-1", "delivered", "om-1", 7),
        ("r-2", "delivered", "om-2", 6),
    ]
    assert applied.rows["deliveries"] == 3  # the older r-2 outcome changed nothing


async def test_a_pooled_connection_that_took_a_session_lock_comes_back_without_any(
    pool: asyncpg.Pool, database: str
) -> None:
    async with pool.acquire() as conn, session_lock(conn, 41):
        # A lock the code forgot to release: the pool's reset releases it.
        await conn.execute("SELECT pg_advisory_lock(42)")
    other = await asyncpg.connect(database)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(41)")
        assert await other.fetchval("SELECT pg_try_advisory_lock(42)")
    finally:
        await other.close()
