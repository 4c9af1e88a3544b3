"""Fixtures for the archiver: a nats-server of the test's own with every stream provisioned,
and an archive directory per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from services.archiver.tests.archiver_testing import Bus
from zhongshu.archiver.adapters.objectstore import ObjectStore, open_store
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all


@pytest.fixture
def fast_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test alone with nats-server's default sync interval: these tests
    move 10^5 events, and fsync-per-write would make that minutes on this box (the archiver's
    durability does not depend on the mode; the crash tests run with fsync always)."""
    with NatsServer(
        tmp_path / "nats", sync_always=False, log_path=tmp_path / "logs" / "nats.log"
    ) as server:
        yield server


async def _bus(url: str) -> AsyncIterator[Bus]:
    await provision_all(url)
    client = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        yield Bus(url, client, client.jetstream(publish_async_max_pending=20_000))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


@pytest_asyncio.fixture
async def bus(fast_nats_server: NatsServer) -> AsyncIterator[Bus]:
    async for value in _bus(fast_nats_server.url):
        yield value


@pytest_asyncio.fixture
async def durable_bus(private_nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A bus that fsyncs every write (the deployment default), for the crash tests."""
    async for value in _bus(private_nats_server.url):
        yield value


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def store(archive_dir: Path) -> ObjectStore:
    return open_store(archive_dir.as_uri())
