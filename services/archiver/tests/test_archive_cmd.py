"""``zhongshu archive ls``, ``verify`` and ``restore`` on an archive the archiver service wrote
from a real JetStream: what they print, what they publish, and one red line for bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig
from typer.testing import CliRunner

from zhongshu.archiver.main import build_service
from zhongshu.archiver.settings import ArchiverSettings
from zhongshu.cli.main import app
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded, TaskRequested
from zhongshu.contracts.examples import example
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all

runner = CliRunner()
EVENTS = 200  # half in January 2025, half in February
COLUMNS = {"COLUMNS": "200"}


def payload(i: int) -> bytes:
    moment = datetime(2025, 1 if i < EVENTS // 2 else 2, 10, tzinfo=UTC) + timedelta(minutes=i)
    return wire.encode(
        wire.make_envelope(
            example(TaskRequested), id=f"task-{i}", source="test", tenant="acme", time=moment
        )
    )


async def _archive(url: str, store_url: str) -> None:
    await provision_all(url)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(EVENTS):
            await js.publish(
                subjects.task_requested("acme"), payload(i), headers={H.MSG_ID: f"task-{i}"}
            )
        service = build_service()
        await service.start(
            ArchiverSettings(
                nats_url=url,
                object_store_url=store_url,
                archive_streams=["TASKS"],
                health_port=0,
                uvloop=False,
                archive_chunk_max_events=EVENTS // 4,
                archive_chunk_max_age_s=0.2,
                archive_fetch_expires_s=0.2,
                archive_fetch_batch=EVENTS // 4,
            )
        )
        try:
            kv = await js.key_value("archive")
            for _ in range(600):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    entry = await kv.get("TASKS")
                    if json.loads(entry.value or b"{}").get("archived") == EVENTS:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the archiver did not finish")
        finally:
            await service.stop()
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(NATS URL, store URL, archive dir) with TASKS archived, shared by this module's tests."""
    root = tmp_path_factory.mktemp("archive-cli")
    with NatsServer(root / "nats", sync_always=False, log_path=root / "nats.log") as server:
        archive = root / "archive"
        asyncio.run(_archive(server.url, archive.as_uri()))
        yield server.url, archive.as_uri(), archive


def invoke(hub: tuple[str, str, Path], *args: str) -> tuple[int, str]:
    url, store_url, _ = hub
    result = runner.invoke(
        app,
        ["archive", *args, "--store", store_url],
        env={**COLUMNS, "ZHONGSHU_NATS_URL": url},
    )
    return result.exit_code, result.output


def stored(url: str, stream: str) -> list[tuple[str, bytes, str]]:
    async def read() -> list[tuple[str, bytes, str]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                out.append((msg.subject or "", msg.data or b"", (msg.headers or {})[H.MSG_ID]))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def add_stream(url: str, name: str, subject: str) -> None:
    async def add() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[subject]))
        finally:
            await nc.close()

    asyncio.run(add())


def test_ls_lists_each_stream_month_and_the_objects_of_one_month(
    hub: tuple[str, str, Path],
) -> None:
    code, out = invoke(hub, "ls")
    assert code == 0, out
    assert "TASKS" in out
    assert "2025-01" in out
    assert "2025-02" in out
    assert f"{EVENTS} events" in out

    code, out = invoke(hub, "ls", "--stream", "TASKS", "--json")
    rows = json.loads(out)
    assert [(r["month"], r["events"]) for r in rows] == [
        ("2025-01", EVENTS // 2),
        ("2025-02", EVENTS // 2),
    ]

    code, out = invoke(hub, "ls", "--month", "2025-02")
    assert code == 0, out
    assert f"{EVENTS // 2 + 1}-{EVENTS * 3 // 4}" in out
    assert "2025-02-10 01:40" in out


def test_ls_refuses_a_bad_month_and_an_unknown_stream_in_one_line(
    hub: tuple[str, str, Path],
) -> None:
    code, out = invoke(hub, "ls", "--month", "2025-13")
    assert code == 2
    assert "no such month: 2025-13" in out
    code, out = invoke(hub, "ls", "--stream", "NOPE")
    assert code == 1
    assert "nothing archived for stream 'NOPE'" in out
    assert "archived: TASKS" in out
    assert "Traceback" not in out


def test_verify_is_clean_then_names_a_corrupted_object(
    hub: tuple[str, str, Path], tmp_path: Path
) -> None:
    code, out = invoke(hub, "verify")
    assert code == 0, out
    assert "archive verified" in out
    assert "contiguous" in out

    # A copy of the archive with one object damaged.
    _, _, archive = hub
    copy = tmp_path / "archive"
    for source in archive.rglob("*"):
        if source.is_file():
            target = copy / source.relative_to(archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    victim = sorted(copy.rglob("*.jsonl.zst"))[0]
    victim.write_bytes(victim.read_bytes()[:-3] + b"xyz")
    result = runner.invoke(app, ["archive", "verify", "--store", copy.as_uri()], env=COLUMNS)
    assert result.exit_code == 1
    assert "corrupt" in result.output
    assert victim.name in result.output
    assert "does not match the manifest" in result.output


def test_restore_into_a_fresh_stream_keeps_order_and_ids_and_twice_stores_once(
    hub: tuple[str, str, Path],
) -> None:
    url = hub[0]
    add_stream(url, "RESTORED", "restored.>")
    code, out = invoke(
        hub, "restore", "--stream", "TASKS", "--from", "2025-01", "--to", "2025-02",
        "--into", "restored.>",
    )  # fmt: skip
    assert code == 0, out
    flat = " ".join(out.split())
    assert f"read from the archive {EVENTS}" in flat
    assert f"stored {EVENTS}" in flat
    assert "failed 0" in flat
    restored = stored(url, "RESTORED")
    assert restored == [
        (f"restored.{subjects.task_requested('acme')}", payload(i), f"task-{i}")
        for i in range(EVENTS)
    ]

    code, out = invoke(
        hub, "restore", "--stream", "TASKS", "--from", "2025-01", "--to", "2025-02",
        "--into", "restored.>",
    )  # fmt: skip
    assert code == 0, out
    flat = " ".join(out.split())
    assert "stored 0" in flat
    assert f"already there (duplicates dropped) {EVENTS}" in flat
    assert len(stored(url, "RESTORED")) == EVENTS


def test_restore_for_projections_uses_the_original_subjects_in_a_replay_stream(
    hub: tuple[str, str, Path],
) -> None:
    code, out = invoke(
        hub, "restore", "--stream", "TASKS", "--from", "2025-02", "--projections",
        "--replay-stream", "REBUILD",
    )  # fmt: skip
    assert code == 0, out
    replayed = stored(hub[0], "REBUILD")
    assert [s for s, _, _ in replayed] == [subjects.task_requested("acme")] * (EVENTS // 2)
    assert [d for _, d, _ in replayed] == [payload(i) for i in range(EVENTS // 2, EVENTS)]
    restores = [d for s, d, _ in stored(hub[0], "AUDIT") if s == "audit._.archive"]
    audited = wire.decode(restores[-1], AuditRecorded).data
    assert (audited.action, audited.target, audited.outcome) == (
        "archive.restored",
        "TASKS 2025-02..2025-02",
        "succeeded",
    )
    assert audited.labels["target_stream"] == "REBUILD"
    assert audited.labels["published"] == str(EVENTS // 2)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--from", "2025-01"], 2, "give either --into SUBJECT or --projections"),
        (["--from", "2025-01", "--into", "x.>", "--projections"], 2, "give either"),
        (["--from", "2025-1", "--into", "x.>"], 2, "expected YYYY-MM"),
        (["--from", "2025-02", "--to", "2025-01", "--into", "x.>"], 2, "is before"),
        (["--from", "2025-01", "--into", "a.*"], 2, "bad --into subject"),
        (["--from", "2025-01", "--into", "nowhere.>"], 1, "no stream stores nowhere.probe"),
    ],
)
def test_restore_input_errors_are_one_red_line(
    hub: tuple[str, str, Path], args: list[str], code: int, message: str
) -> None:
    exit_code, out = invoke(hub, "restore", "--stream", "TASKS", *args)
    assert exit_code == code, out
    assert message in " ".join(out.split())
    assert "Traceback" not in out
