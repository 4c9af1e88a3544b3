"""Fixtures for the projector: a private JetStream per test (the durable consumers' names are
fixed, and a replay reads whole streams), a database of its own per test on the session's
PostgreSQL, and the session's Redis (keys are per tenant, and tenants are unique per test)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest_asyncio
from redis.asyncio import Redis

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # pytest's importlib mode does not add test directories
    sys.path.insert(0, _HERE)

from projector_testing import Bus, fresh_database  # noqa: E402

from zhongshu.projector.db import open_pool  # noqa: E402
from zhongshu.runtime.stack import NatsServer  # noqa: E402
from zhongshu.runtime.testing import provision_all  # noqa: E402


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


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
