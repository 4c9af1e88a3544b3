"""``zhongshu audit ls|export|verify`` on a real PostgreSQL that the projector filled: pages and
filters, an export in both formats that verifies offline, and verify's exit 1 naming the first
record changed in the database or removed from an export."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from typer.testing import CliRunner

from zhongshu.cli.audit_cmd import parse_when
from zhongshu.cli.main import app
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.projector.migrate import migrate
from zhongshu.projector.projections.audit import AuditProjection
from zhongshu.projector.records import Record
from zhongshu.projector.writer import Planned, apply_batch

runner = CliRunner()
T0 = datetime(2026, 3, 1, tzinfo=UTC)
ACME, BETA = "acme", "beta"
COLUMNS = {"COLUMNS": "200"}


async def _fill(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        projection = AuditProjection()
        planned = []
        for n in range(1, 8):
            tenant = ACME if n != 4 else BETA
            event = AuditRecorded(
                actor="ops" if n % 2 else "alice",
                action=("config.pushed", "dlq.replayed")[n % 2],
                target=f"target-{n}",
                outcome="succeeded",
                tenant=tenant,
                detail=f"record {n}",
            )
            env = wire.make_envelope(
                event, id=f"ev-{n}", source="test", tenant=tenant, time=T0 + timedelta(hours=n)
            )
            record = Record("AUDIT", n, subjects.audit(tenant, "cli"), wire.encode(env))
            planned.append(Planned(n, projection.plan(record)))
        async with conn.transaction():
            assert (await apply_batch(conn, projection, planned)).failed == 0
    finally:
        await conn.close()


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    name = f"audit_cli_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    try:
        asyncio.run(_fill(url))
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def invoke(url: str | None, *args: str) -> tuple[int, str]:
    env = {**COLUMNS, "ZHONGSHU_POSTGRES_URL": url or ""}
    result = runner.invoke(app, ["audit", *args], env=env)
    return result.exit_code, result.output


def execute(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def test_ls_pages_newest_first_and_filters(database: str) -> None:
    code, out = invoke(database, "ls", "--json", "--limit", "2")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["event_id"] for r in lines] == ["ev-7", "ev-6"]
    [cursor] = [line.split()[-1] for line in out.splitlines() if line.startswith("more:")]
    code, out = invoke(database, "ls", "--json", "--limit", "2", "--cursor", cursor)
    assert [json.loads(x)["event_id"] for x in out.splitlines() if x.startswith("{")] == [
        "ev-5",
        "ev-4",
    ]
    code, out = invoke(database, "ls", "--json", "--tenant", ACME, "--action", "dlq.*",
                       "--actor", "ops", "--since", "2026-03-01T02:30:00Z")  # fmt: skip
    assert [json.loads(x)["event_id"] for x in out.splitlines() if x.startswith("{")] == [
        "ev-7",
        "ev-5",
        "ev-3",
    ]
    code, out = invoke(database, "ls", "--tenant", BETA)
    assert code == 0
    assert "target-4" in out
    assert "alice" in out


def test_verify_passes_on_an_intact_chain_and_names_a_changed_record(database: str) -> None:
    code, out = invoke(database, "verify")
    assert code == 0, out
    assert "7 record(s) in 2 tenant(s)" in out
    execute(database, "UPDATE audit SET outcome = 'denied' WHERE event_id = 'ev-5'")
    code, out = invoke(database, "verify")
    assert code == 1
    assert "tenant acme: record 4 (stream seq 5, event ev-5)" in out
    assert "changed" in out
    assert invoke(database, "verify", "--tenant", BETA)[0] == 0


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_verifies_offline_and_a_record_removed_from_it_is_named(
    database: str, tmp_path: Path, fmt: str
) -> None:
    export = tmp_path / f"audit.{fmt}"
    code, out = invoke(database, "export", "--format", fmt, "--output", str(export))
    assert code == 0, out
    assert "exported 7 record(s)" in out
    code, out = invoke(None, "verify", "--file", str(export))
    assert code == 0, out
    lines = export.read_text().splitlines(keepends=True)
    # Remove acme's second record (ev-2): the line after the header and the first record.
    [index] = [i for i, line in enumerate(lines) if "ev-2" in line]
    export.write_text("".join(lines[:index] + lines[index + 1 :]))
    code, out = invoke(None, "verify", "--file", str(export))
    assert code == 1
    assert "tenant acme: record 3 (stream seq 3, event ev-3): position 2 missing" in out


def test_an_export_to_stdout_carries_the_chain_ends_and_a_cut_tail_is_found(
    database: str, tmp_path: Path
) -> None:
    code, out = invoke(database, "export", "--tenant", ACME)
    assert code == 0
    lines = out.splitlines()
    assert json.loads(lines[0])["audit_chain"][ACME]["pos"] == 6
    export = tmp_path / "cut.jsonl"
    export.write_text("\n".join(lines[:-1]) + "\n")
    code, out = invoke(None, "verify", "--file", str(export))
    assert code == 1
    assert "removed from the end" in out


def test_errors_are_one_line_and_usage_errors_exit_2(tmp_path: Path) -> None:
    code, out = invoke(None, "ls")
    assert code == 2
    assert "ZHONGSHU_POSTGRES_URL" in out
    code, out = invoke("postgresql://127.0.0.1:1/none", "ls", "--since", "yesterday")
    assert code == 2
    assert "--since" in out
    code, out = invoke(None, "verify", "--file", str(tmp_path / "missing.jsonl"))
    assert code == 1
    assert "cannot read" in out
    assert parse_when("2d", "--since", now=T0) == T0 - timedelta(days=2)
