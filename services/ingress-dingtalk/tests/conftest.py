"""Fixtures for ingress-dingtalk: a configured app, and in-process replicas on real JetStream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from zhongshu.devstack.fakes.dingtalk import DingTalkApp, MakeApp, write_app
from zhongshu.devstack.testing import StartService
from zhongshu.ingress_dingtalk.main import build_service
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.runtime import Service


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    def make(receive: tuple[str, ...] = ("http",)) -> DingTalkApp:
        return write_app(tmp_path, receive)

    return make


@pytest_asyncio.fixture
async def start_replica() -> AsyncIterator[StartService]:
    """Start an ingress-dingtalk replica in this process; every one is stopped after the test."""
    started: list[Service] = []

    async def start(nats_url: str, app: DingTalkApp, **settings: Any) -> Service:
        service = build_service()
        await service.start(
            DingTalkIngressSettings(
                nats_url=nats_url,
                health_port=0,
                uvloop=False,
                config=app.config,
                drain_timeout_s=5,
                connect_timeout_s=5,
                **settings,
            )
        )
        started.append(service)
        return service

    yield start
    for service in started:
        with contextlib.suppress(Exception):
            await service.stop()
