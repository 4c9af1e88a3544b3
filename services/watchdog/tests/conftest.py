"""Fixtures for the watchdog: a JetStream of each test's own (the watchdog's durable consumers
have fixed names, and the DLQ and AUDIT streams must hold only what the test put there)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest_asyncio
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from services.watchdog.tests.watchdog_testing import Recorder
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all


@dataclass
class Bus:
    url: str
    nc: Client
    js: JetStreamContext
    recorder: Recorder


@pytest_asyncio.fixture
async def bus() -> AsyncIterator[Bus]:
    root = Path(tempfile.mkdtemp(prefix="zhongshu-watchdog-nats-"))
    try:
        with NatsServer(root / "nats", sync_always=False, log_path=root / "nats.log") as server:
            await provision_all(server.url)
            client = await nats.connect(server.url)
            recorder = await Recorder().start(client.jetstream())
            try:
                yield Bus(server.url, client, client.jetstream(), recorder)
            finally:
                await recorder.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 5)
    finally:
        shutil.rmtree(root, ignore_errors=True)
