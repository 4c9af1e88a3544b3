"""Fixtures for ingress-dingtalk: a configured app, and in-process replicas on real JetStream."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

# pytest's importlib mode puts neither the workspace root (for tests/fakes) nor this directory
# (for dingtalk_testing) on sys.path.
for _path in (Path(__file__).resolve().parents[3], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from dingtalk_testing import DingTalkApp, MakeApp, StartReplica, write_app  # noqa: E402

from zhongshu.ingress_dingtalk.main import build_service  # noqa: E402
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings  # noqa: E402
from zhongshu.runtime import Service  # noqa: E402


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    def make(receive: tuple[str, ...] = ("http",)) -> DingTalkApp:
        return write_app(tmp_path, receive)

    return make


@pytest_asyncio.fixture
async def start_replica() -> AsyncIterator[StartReplica]:
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
