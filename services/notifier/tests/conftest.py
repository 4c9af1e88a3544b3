"""Fixtures for the notifier: fake platforms, a private JetStream per test, the session Redis,
and notifier replicas started in this process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest_asyncio

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    StartNotifier,
    replica_settings,
)
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.testing import provision_all
from zhongshu.notifier.main import build_service
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig


@pytest_asyncio.fixture
async def bus(private_nats_server: NatsServer) -> AsyncIterator[Bus]:
    await provision_all(private_nats_server.url)
    client = await nats.connect(private_nats_server.url)
    try:
        yield Bus(private_nats_server.url, client, client.jetstream())
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


@pytest_asyncio.fixture
async def platforms() -> AsyncIterator[Platforms]:
    """Fresh fakes with credentials unique to the test (Redis is shared by the session, and
    tokens and rate-limit buckets are keyed by them)."""
    run = uuid.uuid4().hex[:8]
    robot_token, robot_secret = f"robot-{run}", f"SEC{run}"
    hook, hook_secret = f"hook-{run}", f"hooksecret-{run}"
    dingtalk = FakeDingTalkOpenAPI(
        app_key=f"ding-{run}",
        app_secret=f"ding-secret-{run}",
        robot_code=f"ding-robot-{run}",
        robots={robot_token: robot_secret},
    )
    feishu = FakeFeishuOpenAPI(
        app_id=f"cli_{run}", app_secret=f"feishu-secret-{run}", bots={hook: hook_secret}
    )
    async with dingtalk, feishu:
        yield Platforms(dingtalk, feishu, robot_token, robot_secret, hook, hook_secret)


@pytest_asyncio.fixture
async def start_notifier(
    bus: Bus, platforms: Platforms, redis_url: str
) -> AsyncIterator[StartNotifier]:
    """Start a notifier replica in this process; all are stopped after the test."""
    started: list[Service] = []

    async def start(config: HubConfig | None = None, **settings: Any) -> Service:
        service = build_service(config=config or platforms.config())
        await service.start(replica_settings(bus, platforms, redis_url, **settings))
        started.append(service)
        return service

    yield start
    for service in started:
        with contextlib.suppress(Exception):
            await service.stop()
