"""Fixtures for the task engine: one tenant per test on the session's provisioned JetStream,
engines and a fake agent started in this process (see `taskengine_testing`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

# pytest's importlib mode does not put the workspace root (for tests/fakes) or this directory
# (for taskengine_testing) on sys.path.
for _path in (Path(__file__).resolve().parents[3], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from nats.js.client import JetStreamContext  # noqa: E402
from taskengine_testing import Hub  # noqa: E402


@pytest_asyncio.fixture
async def hub(js: JetStreamContext, provisioned_nats_url: str) -> AsyncIterator[Hub]:
    hub = Hub(js, provisioned_nats_url)
    try:
        yield hub
    finally:
        await hub.close()
