"""Fixtures for the projector: a private JetStream per test (the durable consumers' names are
fixed, and a replay reads whole streams), a database of its own per test on the session's
PostgreSQL, and the session's Redis (keys are per tenant, and tenants are unique per test)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest_asyncio

from services.projector.tests.projector_testing import Bus, fresh_database
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all
from zhongshu.projector.db import open_pool


@pytest_asyncio.fixture
async def bus() -> AsyncIterator[Bus]:
    root = Path(tempfile.mkdtemp(prefix="zhongshu-projector-nats-"))
    try:
        with NatsServer(root / "nats", sync_always=False, log_path=root / "nats.log") as server:
            await provision_all(server.url)
            client = await nats.connect(server.url)
            try:
                yield Bus(server.url, client, client.jetstream())
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_url) as url:
        yield url


@pytest_asyncio.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on the test's database."""
    opened = await open_pool(database)
    try:
        yield opened
    finally:
        await opened.close()
