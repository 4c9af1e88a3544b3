"""The watchdog and the audit trail: a person's action on an alert is recorded in it, and the
trail's hash chain in the warm tier is checked: a record changed in PostgreSQL raises a critical
alert, and so does history rewritten with a recomputed chain (the records it had verified no
longer carry their hashes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest_asyncio

from services.watchdog.tests.conftest import Bus
from services.watchdog.tests.watchdog_testing import (
    FAST,
    WAIT_S,
    press,
    publish_alert,
    start_watchdog,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AlertRaised, AuditRecorded
from zhongshu.contracts.streams import AUDIT
from zhongshu.devstack.testing import eventually
from zhongshu.projector import retention
from zhongshu.projector.migrate import migrate
from zhongshu.projector.projections.audit import AuditProjection
from zhongshu.projector.records import Record
from zhongshu.projector.writer import Planned, apply_batch
from zhongshu.runtime import auditchain, auditstore
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.watchdog.chain import ChainCheck
from zhongshu.watchdog.main import build_service
from zhongshu.watchdog.settings import WatchdogSettings

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def warm(postgres_url: str) -> AsyncIterator[str]:
    """A migrated warm tier of its own, with three chained records of tenant `acme`."""
    name = f"watchdog_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        projection = AuditProjection()
        planned = []
        for n in range(1, 4):
            event = AuditRecorded(
                actor="ops", action="config.pushed", target=f"t{n}", outcome="succeeded",
                tenant="acme",
            )  # fmt: skip
            env = wire.make_envelope(
                event, id=f"e{n}", source="test", tenant="acme", time=T0 + timedelta(minutes=n)
            )
            record = Record("AUDIT", n, subjects.audit("acme", "config"), wire.encode(env))
            planned.append(Planned(n, projection.plan(record)))
        async with conn.transaction():
            assert (await apply_batch(conn, projection, planned)).failed == 0
    finally:
        await conn.close()
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_record_changed_in_the_warm_tier_raises_a_critical(bus: Bus, warm: str) -> None:
    watchdog = build_service(config=StaticConfig(HubConfig(watchdog=FAST)))
    await watchdog.start(
        WatchdogSettings(
            nats_url=bus.url, watchdog_disks=[], heartbeat_interval_s=0, postgres_url=warm
        )
    )
    try:
        conn = await asyncpg.connect(warm)
        try:
            await conn.execute("UPDATE audit SET actor = 'mallory' WHERE pos = 2")
        finally:
            await conn.close()
        broken = await eventually(
            lambda: bus.recorder.alerts("audit.chain", tenant="acme"), "a chain alert", WAIT_S
        )
        assert broken[0].level == "critical"
        assert "record 2 (stream seq 2, event e2)" in broken[0].detail
        assert broken[0].labels["sticky"] == "true"
    finally:
        await watchdog.stop()


async def test_history_rewritten_with_a_recomputed_chain_is_caught(warm: str) -> None:
    check = ChainCheck(warm, tail=2)
    try:
        assert await check.run() == []
        conn = await asyncpg.connect(warm)
        try:
            rows = await conn.fetch(f"SELECT {auditstore.COLUMNS} FROM audit ORDER BY pos")
            records = [auditstore.chain_record(auditstore.row_dict(r)) for r in rows]
            records[0] = replace(records[0], actor="mallory")
            for r in auditchain.chain(records, auditchain.GENESIS):
                await conn.execute(
                    "UPDATE audit SET actor = $2, prev_hash = $3, hash = $4 WHERE pos = $1",
                    r.pos, r.actor, r.prev_hash, r.hash,
                )  # fmt: skip
            await conn.execute("UPDATE audit_chain SET hash = $1", r.hash)
        finally:
            await conn.close()
        [finding] = await check.run()
        assert finding.level == "critical"
        assert finding.check == "audit.chain"
        assert "history rewritten" in finding.detail
    finally:
        await check.close()


async def test_an_acknowledged_alert_is_in_the_audit_trail_once(bus: Bus) -> None:
    watchdog = await start_watchdog(bus.url)
    try:
        key = await publish_alert(
            bus.js, AlertRaised(level="error", source="router", title="t", dedupe_key="a-1")
        )
        await eventually(lambda: bus.recorder.states(key, "raised"), "raised", WAIT_S)
        await press(bus.js, key, "acknowledge")
        await press(bus.js, key, "silence", silence_s=600)
        await eventually(lambda: bus.recorder.states(key, "silenced"), "silenced", WAIT_S)

        async def audited() -> list[AuditRecorded]:
            info = await bus.js.stream_info(AUDIT.name)
            found = []
            for seq in range(int(info.state.first_seq), int(info.state.last_seq) + 1):
                msg = await bus.js.get_msg(AUDIT.name, seq)
                found.append(wire.decode(msg.data or b"", AuditRecorded).data)
            return [e for e in found if e.target == f"alert:{key}"]

        records = await eventually(lambda: _two(audited), "two audit records of the alert", WAIT_S)
        assert [(r.action, r.outcome) for r in records] == [
            ("alert.acknowledged", "succeeded"),
            ("alert.silenced", "succeeded"),
        ]
        assert records[0].actor == "feishu:ops-bot:ou_admin"
        assert records[0].tenant == "_"
        assert records[1].detail == "for 600 s"
    finally:
        await watchdog.stop()


async def _two(read: Callable[[], Awaitable[list[AuditRecorded]]]) -> list[AuditRecorded]:
    found = await read()
    return found if len(found) >= 2 else []


async def test_records_pruned_by_retention_are_no_break(warm: str) -> None:
    check = ChainCheck(warm)
    pool = await asyncpg.create_pool(warm, min_size=1, max_size=2)
    try:
        assert await check.run() == []
        # An idle tenant: every record older than the retention, the last one included.
        pruned = await retention.prune(pool, 1, now=T0 + timedelta(days=90))
        assert pruned is not None
        assert pruned["audit"] == 3
        assert await check.run() == []
    finally:
        await pool.close()
        await check.close()
