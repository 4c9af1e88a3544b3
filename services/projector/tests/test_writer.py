"""The live writer: batched upserts keep each row's changes in stream order, pooled connections
carry no session lock to their next user, and the messages it holds are kept alive."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import cast

import asyncpg

from zhongshu.projector.projections import Applied
from zhongshu.projector.projections.deliveries import DeliveriesProjection, DeliveryChange
from zhongshu.projector.sessions import session_lock
from zhongshu.projector.writer import KeepAlive
from zhongshu.runtime.consumer import Delivery

AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LIVENESS_S = 10.0  # how long to wait before calling a ping missing, not a speed bound


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


class _Held:
    def __init__(self) -> None:
        self.pings = 0
        self.pinged = asyncio.Event()

    async def in_progress(self) -> None:
        self.pings += 1
        if self.pings >= 2:
            self.pinged.set()


async def test_every_message_the_writer_holds_is_kept_alive_while_armed() -> None:
    held = [_Held(), _Held()]
    keepalive = KeepAlive(0.01, lambda: cast(list[Delivery], held))
    keepalive.arm()
    try:
        for message in held:
            await asyncio.wait_for(message.pinged.wait(), LIVENESS_S)
    finally:
        keepalive.disarm()
    await asyncio.sleep(0)  # a ping already under way finishes
    counts = [message.pings for message in held]
    await asyncio.sleep(0.05)
    assert [message.pings for message in held] == counts  # disarmed: no more pings
