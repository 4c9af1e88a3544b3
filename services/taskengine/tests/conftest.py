"""Fixtures for the task engine: one tenant per test on the session's provisioned JetStream,
engines and a fake agent started in this process (see `taskengine_testing`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from nats.js.client import JetStreamContext

from services.taskengine.tests.taskengine_testing import Hub


@pytest_asyncio.fixture
async def hub(js: JetStreamContext, provisioned_nats_url: str) -> AsyncIterator[Hub]:
    hub = Hub(js, provisioned_nats_url)
    try:
        yield hub
    finally:
        await hub.close()
