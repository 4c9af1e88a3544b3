"""``zhongshu projections rebuild``: rebuilds the warm tier from a real JetStream into a real
PostgreSQL, prints a summary, and with ``--verify`` proves a replay changes nothing (or says
which source it changed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import pytest
from redis import Redis
from typer.testing import CliRunner

from zhongshu.cli.main import app
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded, TaskCompleted, TaskRequested, TaskStarted
from zhongshu.contracts.hotcache import task_status_key
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all

runner = CliRunner()
TENANT = f"cli-{uuid.uuid4().hex[:8]}"
TASKS = 30
COLUMNS = {"COLUMNS": "200"}


async def _publish(url: str) -> None:
    await provision_all(url)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()

        async def send(
            subject: str, event: TaskRequested | TaskStarted | TaskCompleted | AuditRecorded
        ) -> None:
            env = wire.make_envelope(event, id=uuid.uuid4().hex, source="test", tenant=TENANT)
            await js.publish(subject, wire.encode(env), headers={H.MSG_ID: env.id})

        for n in range(TASKS):
            task_id = f"t-{n}"
            await send(
                subjects.task_requested(TENANT),
                TaskRequested(
                    task_id=task_id,
                    tenant=TENANT,
                    requested_by="u",
                    origin="api",
                    prompt=f"job {n}",
                ),
            )
            await send(subjects.task_event(TENANT, task_id), TaskStarted(task_id=task_id))
            await send(
                subjects.task_event(TENANT, task_id),
                TaskCompleted(task_id=task_id, result_text="ok"),
            )
        await send(
            subjects.audit(TENANT, "config"),
            AuditRecorded(
                actor="op", action="config.pushed", target="c", outcome="succeeded", tenant=TENANT
            ),
        )
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("projections-cli")
    with NatsServer(root / "nats", sync_always=False, log_path=root / "nats.log") as server:
        asyncio.run(_publish(server.url))
        yield server.url


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    name = f"projections_cli_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def invoke(bus: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["projections", "rebuild", *args],
        env={**COLUMNS, "ZHONGSHU_NATS_URL": bus, "ZHONGSHU_REDIS_URL": "", **(env or {})},
    )
    return result.exit_code, result.output


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_rebuild_fills_the_read_models_and_refreshes_the_hot_tier(
    bus: str, database: str, redis_url: str
) -> None:
    code, out = invoke(bus, "--redis-url", redis_url, env={"ZHONGSHU_POSTGRES_URL": database})
    assert code == 0, out
    assert "TASKS" in out
    assert "AUDIT" in out
    # Each task event writes its task's row and its history row; the audit event one row.
    assert f"8 source(s) rebuilt: {TASKS * 3 + 1} message(s), {TASKS * 6 + 1} row(s) written" in out
    assert query(
        database, f"SELECT status, count(*) FROM tasks WHERE tenant = '{TENANT}' GROUP BY 1"
    ) == [("completed", TASKS)]
    assert query(database, f"SELECT count(*) FROM task_events WHERE tenant = '{TENANT}'") == [
        (TASKS * 3,)
    ]
    with Redis.from_url(redis_url) as redis:
        assert redis.exists(task_status_key(TENANT, "t-0")) == 1


def test_verify_replays_over_the_rows_and_finds_nothing_changed(bus: str, database: str) -> None:
    code, out = invoke(bus, "--postgres-url", database)
    assert code == 0, out
    before = query(database, "SELECT t::text FROM tasks t ORDER BY 1")
    code, out = invoke(bus, "--verify", "--stream", "tasks", "--postgres-url", database)
    assert code == 0, out
    assert "changed by applied messages" in out
    assert "1 source(s) replayed over the current rows" in out
    assert query(database, "SELECT t::text FROM tasks t ORDER BY 1") == before


def test_verify_reports_a_read_model_that_drifted(bus: str, database: str) -> None:
    code, out = invoke(bus, "--stream", "TASKS", "--postgres-url", database)
    assert code == 0, out
    drift = "UPDATE tasks SET status = 'queued', last_seq = 0 WHERE task_id = 't-3' AND tenant = $1"
    query(database, drift.replace("$1", f"'{TENANT}'"))
    code, out = invoke(bus, "--verify", "--stream", "TASKS", "--postgres-url", database)
    assert code == 1
    assert "not idempotent" in out
    # A rebuild puts it right.
    code, out = invoke(bus, "--stream", "TASKS", "--postgres-url", database)
    assert code == 0, out
    assert query(
        database, f"SELECT status FROM tasks WHERE task_id = 't-3' AND tenant = '{TENANT}'"
    ) == [("completed",)]


def test_an_unknown_source_exits_2_naming_the_known_ones(bus: str, database: str) -> None:
    code, out = invoke(bus, "--stream", "NOPE", "--postgres-url", database)
    assert code == 2
    assert "unknown source 'NOPE'" in out
    assert "KV_subscriptions" in out


def test_without_a_database_it_exits_2_saying_what_to_set(bus: str) -> None:
    code, out = invoke(bus, env={"ZHONGSHU_POSTGRES_URL": ""})
    assert code == 2
    assert "give --postgres-url or set ZHONGSHU_POSTGRES_URL" in out
