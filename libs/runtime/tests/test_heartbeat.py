"""Every started service writes its heartbeat (identity, readiness, CPU, memory, conditions) to
the ``heartbeats`` bucket, and a graceful stop deletes it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError

from zhongshu.contracts.heartbeats import Heartbeat
from zhongshu.contracts.streams import HEARTBEATS_KV
from zhongshu.devstack.testing import eventually
from zhongshu.runtime import Service, ServiceSettings, conditions


@pytest.fixture
def clean_conditions() -> Iterator[None]:
    conditions.reset()
    yield
    conditions.reset()


async def _read(js: JetStreamContext, key: str) -> Heartbeat | None:
    kv = await js.key_value(HEARTBEATS_KV.bucket)
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return msgspec.json.decode(entry.value or b"", type=Heartbeat) if entry.value else None


async def test_a_running_service_beats_and_a_graceful_stop_deletes_its_key(
    provisioned_nats_url: str, js: JetStreamContext, clean_conditions: None
) -> None:
    ready = {"db": False}

    @contextlib.asynccontextmanager
    async def lifespan(svc: Service[ServiceSettings, None]) -> AsyncIterator[None]:
        yield None

    async def db_ready(_: None) -> bool:
        return ready["db"]

    name = "hb-" + uuid.uuid4().hex[:8]
    service: Service[ServiceSettings, None] = Service(name, ServiceSettings, lifespan)
    service.ready_when("db", db_ready)
    await service.start(ServiceSettings(nats_url=provisioned_nats_url, heartbeat_interval_s=0.2))
    try:
        assert service.heartbeats is not None
        key = service.heartbeats.key
        first = await eventually(lambda: _read(js, key), "a heartbeat")
        assert (first.service, first.pid > 0, first.ready) == (name, True, False)
        assert first.checks == {"bus": True, "db": False}

        ready["db"] = True
        conditions.set("llm", ok=False, detail="503 after 3 attempts")

        async def ready_and_failing() -> Heartbeat | None:
            beat = await _read(js, key)
            return beat if beat is not None and beat.ready and beat.conditions else None

        beat = await eventually(ready_and_failing, "a ready heartbeat with the llm condition")
        assert beat.conditions["llm"].ok is False
        assert beat.conditions["llm"].detail == "503 after 3 attempts"
        assert beat.rss_bytes > 0
    finally:
        await service.stop()
    assert await _read(js, key) is None


def test_a_condition_keeps_its_since_until_ok_changes(clean_conditions: None) -> None:
    conditions.set("credentials.bot", ok=False, detail="refused")
    since = conditions.snapshot()["credentials.bot"].since
    conditions.set("credentials.bot", ok=False, detail="refused again")
    again = conditions.snapshot()["credentials.bot"]
    assert (again.since, again.detail) == (since, "refused again")
    conditions.set("credentials.bot", ok=True)
    assert conditions.snapshot()["credentials.bot"].ok is True
    assert conditions.snapshot()["credentials.bot"].since >= since
