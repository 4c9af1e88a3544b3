"""The audit trail's hash chain in the warm tier: appended per tenant in stream order, each event
chained once however often it is delivered, and `verify` names the first record changed, removed
or moved by hand in PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from services.projector.tests.projector_testing import unique
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.projector import retention
from zhongshu.projector.projections.audit import AuditProjection
from zhongshu.projector.records import Record
from zhongshu.projector.writer import Planned, apply_batch
from zhongshu.runtime import auditstore
from zhongshu.runtime.auditchain import GENESIS

T0 = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def record(seq: int, tenant: str, action: str, *, event_id: str | None = None,
           at: datetime | None = None) -> Record:  # fmt: skip
    event = AuditRecorded(
        actor="ops", action=action, target="t", outcome="succeeded", tenant=tenant,
        labels={"n": str(seq)},
    )  # fmt: skip
    env = wire.make_envelope(
        event, id=event_id or f"ev-{tenant}-{seq}", source="test", tenant=tenant,
        time=at or T0 + timedelta(seconds=seq),
    )  # fmt: skip
    return Record("AUDIT", seq, subjects.audit(tenant, "config"), wire.encode(env))


async def write(pool: asyncpg.Pool, records: list[Record]) -> None:
    """One batch, as the live writer applies it."""
    projection = AuditProjection()
    async with pool.acquire() as conn, conn.transaction():
        result = await apply_batch(
            conn, projection, [Planned(r.seq, projection.plan(r)) for r in records]
        )
    assert result.failed == 0


async def verify(pool: asyncpg.Pool, tenant: str) -> list[str]:
    async with pool.acquire() as conn:
        found = await auditstore.verify_stored(conn, tenant=tenant)
    return [b.describe() for b in found.breaks]


async def chain_of(pool: asyncpg.Pool, tenant: str) -> list[tuple[int, int, str, str]]:
    rows = await pool.fetch(
        "SELECT pos, stream_seq, prev_hash, hash FROM audit WHERE tenant = $1 ORDER BY pos", tenant
    )
    return [(r["pos"], r["stream_seq"], r["prev_hash"], r["hash"]) for r in rows]


async def five(pool: asyncpg.Pool) -> str:
    t = unique("chain")
    other = unique("other")
    await write(pool, [record(1, t, "config.pushed"), record(2, other, "dlq.replayed"),
                       record(3, t, "dlq.replayed")])  # fmt: skip
    await write(pool, [record(4, t, "archive.restored"), record(5, t, "alert.acknowledged"),
                       record(6, t, "token.issued")])  # fmt: skip
    return t


async def test_records_are_chained_per_tenant_in_stream_order_and_an_intact_chain_verifies(
    pool: asyncpg.Pool,
) -> None:
    t = await five(pool)
    chain = await chain_of(pool, t)
    assert [(pos, seq) for pos, seq, _, _ in chain] == [(1, 1), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert chain[0][2] == GENESIS
    assert all(chain[i][2] == chain[i - 1][3] for i in range(1, 5))
    assert await verify(pool, t) == []
    head = await pool.fetchrow("SELECT pos, hash FROM audit_chain WHERE tenant = $1", t)
    assert (head["pos"], head["hash"]) == (5, chain[-1][3])


async def test_a_redelivered_batch_and_a_republished_event_are_chained_once(
    pool: asyncpg.Pool,
) -> None:
    t = await five(pool)
    before = await chain_of(pool, t)
    await write(pool, [record(3, t, "dlq.replayed"), record(4, t, "archive.restored")])
    # The same event id on a new sequence (published again after the duplicate window).
    await write(pool, [record(9, t, "token.issued", event_id=f"ev-{t}-6"), record(10, t, "x.y")])
    after = await chain_of(pool, t)
    assert after[:5] == before
    assert [(pos, seq) for pos, seq, _, _ in after[5:]] == [(6, 10)]
    assert await verify(pool, t) == []


async def test_verify_names_a_changed_record(pool: asyncpg.Pool) -> None:
    t = await five(pool)
    await pool.execute("UPDATE audit SET actor = 'someone-else' WHERE tenant = $1 AND pos = 3", t)
    assert await verify(pool, t) == [
        f"tenant {t}: record 3 (stream seq 4, event ev-{t}-4): its hash does not match its "
        "fields (changed)"
    ]


async def test_verify_names_a_changed_record_whose_hash_was_recomputed(
    pool: asyncpg.Pool,
) -> None:
    t = await five(pool)
    await pool.execute(
        "UPDATE audit SET data = jsonb_set(data, '{detail}', '\"edited\"'), hash = $2 "
        "WHERE tenant = $1 AND pos = 2",
        t,
        "f" * 64,
    )
    [found] = await verify(pool, t)
    assert found.startswith(f"tenant {t}: record 2 ")


async def test_verify_names_where_a_record_was_removed(pool: asyncpg.Pool) -> None:
    t = await five(pool)
    await pool.execute("DELETE FROM audit WHERE tenant = $1 AND pos = 2", t)
    assert await verify(pool, t) == [
        f"tenant {t}: record 3 (stream seq 4, event ev-{t}-4): position 2 missing before it "
        "(removed)"
    ]


async def test_verify_sees_the_first_and_the_last_record_removed(pool: asyncpg.Pool) -> None:
    t = await five(pool)
    await pool.execute("DELETE FROM audit WHERE tenant = $1 AND pos = 5", t)
    [found] = await verify(pool, t)
    assert "removed from the end" in found
    await pool.execute("DELETE FROM audit WHERE tenant = $1 AND pos = 1", t)
    [found] = await verify(pool, t)
    assert found.startswith(f"tenant {t}: record 2 ")
    assert "position 1 missing" in found


async def test_verify_names_a_reordered_pair(pool: asyncpg.Pool) -> None:
    t = await five(pool)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE audit SET pos = -1 WHERE tenant = $1 AND pos = 2", t)
        await conn.execute("UPDATE audit SET pos = 2 WHERE tenant = $1 AND pos = 3", t)
        await conn.execute("UPDATE audit SET pos = 3 WHERE tenant = $1 AND pos = -1", t)
    [found] = await verify(pool, t)
    assert found.startswith(f"tenant {t}: record 2 (stream seq 4, ")


async def test_verify_names_a_pair_whose_contents_were_swapped(pool: asyncpg.Pool) -> None:
    t = await five(pool)
    await pool.execute(
        "UPDATE audit a SET actor = b.actor, action = b.action, data = b.data, at = b.at "
        "FROM audit b WHERE a.tenant = $1 AND b.tenant = $1 "
        "AND ((a.pos = 3 AND b.pos = 4) OR (a.pos = 4 AND b.pos = 3))",
        t,
    )
    [found] = await verify(pool, t)
    assert found.startswith(f"tenant {t}: record 3 ")
    assert "(changed)" in found


async def test_the_tail_check_reads_only_the_last_records(pool: asyncpg.Pool) -> None:
    t = await five(pool)
    await pool.execute("UPDATE audit SET actor = 'x' WHERE tenant = $1 AND pos = 1", t)
    async with pool.acquire() as conn:
        tail = await auditstore.verify_stored(conn, tenant=t, tail=2)
        full = await auditstore.verify_stored(conn, tenant=t, chunk=2)
    assert tail.ok
    assert tail.records == {t: 2}
    assert [b.pos for b in full.breaks] == [1]


async def test_retention_deletes_the_front_of_a_chain_and_anchors_what_is_left(
    pool: asyncpg.Pool,
) -> None:
    t = unique("prune")
    old = datetime(2025, 12, 1, tzinfo=UTC)
    # An old record after a new one (a late arrival) stays: only the front of a chain goes.
    await write(pool, [record(1, t, "a.b", at=old), record(2, t, "a.b", at=old),
                       record(3, t, "a.b", at=T0), record(4, t, "a.b", at=old)])  # fmt: skip
    deleted = await retention.prune(pool, 1, now=T0)
    assert deleted is not None
    assert deleted["audit"] >= 2
    assert [pos for pos, *_ in await chain_of(pool, t)] == [3, 4]
    assert await verify(pool, t) == []
    await pool.execute("DELETE FROM audit WHERE tenant = $1 AND pos = 3", t)
    [found] = await verify(pool, t)
    assert "position 3 missing" in found
