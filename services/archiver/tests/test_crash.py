"""kill -9 of an archiver process in the middle of writing a chunk, then a restart: the archive
ends up with every sequence exactly once (no gap, no duplicate line), objects rewritten under
the same names, and verify clean. Runs on a nats-server that fsyncs every write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from services.archiver.tests.archiver_testing import (
    Bus,
    archived_lines,
    publish_events,
    settings,
    start_archiver,
    stop_quietly,
    wait_archived,
)
from zhongshu.archiver import verify
from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.adapters.statekv import StateStore

STREAM = "CHAT_INBOUND"
EVENTS = 3_000
CHUNK = 500


class ArchiverProcess:
    """``python -m zhongshu.archiver.main`` with the test's environment."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, bus: Bus, archive_dir: Path, **env: str) -> ArchiverProcess:
        environment = {
            **os.environ,
            "ZHONGSHU_NATS_URL": bus.url,
            "ZHONGSHU_OBJECT_STORE_URL": archive_dir.as_uri(),
            "ZHONGSHU_ARCHIVE_STREAMS": STREAM,
            "ZHONGSHU_ARCHIVE_CHUNK_MAX_EVENTS": str(CHUNK),
            "ZHONGSHU_ARCHIVE_FETCH_BATCH": "250",
            "ZHONGSHU_ARCHIVE_CHUNK_MAX_AGE_S": "60",
            "ZHONGSHU_ARCHIVE_FETCH_EXPIRES_S": "0.3",
            "ZHONGSHU_HEALTH_PORT": "0",
            "ZHONGSHU_LOG_LEVEL": "WARNING",
            **env,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zhongshu.archiver.main",
            env=environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def exit_code(self, within_s: float = 60.0) -> int:
        try:
            _, stderr = await asyncio.wait_for(self.proc.communicate(), within_s)
        except TimeoutError:
            self.kill()
            raise AssertionError("the archiver did not exit") from None
        assert self.proc.returncode is not None, stderr
        return self.proc.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)


async def assert_archived_exactly_once(bus: Bus, store: ObjectStore, archive_dir: Path) -> None:
    """Restart (in this process), let it finish, and check every line and the archive."""
    service = await start_archiver(
        settings(bus.url, archive_dir.as_uri(), [STREAM], archive_chunk_max_events=CHUNK)
    )
    try:
        await wait_archived(bus.js, [STREAM])
    finally:
        await stop_quietly(service)
    lines = await archived_lines(store, STREAM)
    assert [line.seq for line in lines] == list(range(1, EVENTS + 1))
    report = await verify.verify(store, await verify.plan(store, STREAM, None), whole_streams=True)
    assert report.problems == [], report.problems


@pytest.mark.parametrize("step", ["after-objects", "after-manifests"])
async def test_kill_9_between_writing_a_chunk_and_recording_it_rewrites_the_same_objects(
    durable_bus: Bus, store: ObjectStore, archive_dir: Path, step: str
) -> None:
    await publish_events(durable_bus.js, STREAM, EVENTS)
    archiver = await ArchiverProcess.start(
        durable_bus, archive_dir, ZHONGSHU_ARCHIVE_CRASH_AT=f"{step}:2"
    )
    assert await archiver.exit_code() == -signal.SIGKILL
    state = await (await StateStore.open(durable_bus.js)).load(STREAM)
    assert state.archived == CHUNK, "the first chunk was committed before the crash"
    assert state.pending == (CHUNK + 1, 2 * CHUNK), "the second was being written"
    written_before = {o.key for o in await store.list(f"{STREAM}/") if o.key.endswith(".zst")}
    assert any(f"{CHUNK + 1:020d}" in key for key in written_before), "crashed mid-chunk"

    await assert_archived_exactly_once(durable_bus, store, archive_dir)
    written_after = {o.key for o in await store.list(f"{STREAM}/") if o.key.endswith(".zst")}
    assert written_before <= written_after, "the interrupted chunk kept its object names"


async def test_kill_9_while_events_keep_arriving_loses_and_repeats_nothing(
    durable_bus: Bus, store: ObjectStore, archive_dir: Path
) -> None:
    await publish_events(durable_bus.js, STREAM, EVENTS // 2)
    archiver = await ArchiverProcess.start(
        durable_bus, archive_dir, ZHONGSHU_ARCHIVE_CHUNK_MAX_AGE_S="0.2"
    )
    states = await StateStore.open(durable_bus.js)
    try:
        publishing = asyncio.create_task(
            publish_events(durable_bus.js, STREAM, EVENTS // 2, start=EVENTS // 2)
        )
        while (await states.load(STREAM)).archived < CHUNK:
            assert archiver.proc.returncode is None, "the archiver died on its own"
            await asyncio.sleep(0.01)
        archiver.kill()
        await publishing
    finally:
        archiver.kill()
    assert await archiver.exit_code() == -signal.SIGKILL
    assert (await states.load(STREAM)).archived < EVENTS, "killed before it had finished"
    await assert_archived_exactly_once(durable_bus, store, archive_dir)
