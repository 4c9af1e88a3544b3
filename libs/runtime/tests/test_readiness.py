"""``Service.readiness_ping``: ready while the client the lifespan opened answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from zhongshu.runtime import ServiceSettings
from zhongshu.runtime.service import Service


async def test_ready_while_the_client_answers_and_not_before_or_after(
    redis_url: str, provisioned_nats_url: str
) -> None:
    clients = {"now": Redis.from_url(redis_url)}

    @contextlib.asynccontextmanager
    async def lifespan(
        svc: Service[ServiceSettings, dict[str, Redis]],
    ) -> AsyncIterator[dict[str, Redis]]:
        yield clients

    service = Service("probe", ServiceSettings, lifespan, publishes=[])
    service.readiness_ping("redis", lambda deps: deps["now"])
    check = service._checks["redis"]
    assert await check() is False  # not opened yet
    await service.start(ServiceSettings(nats_url=provisioned_nats_url, drain_timeout_s=5))
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        assert await check() is True
        healthy, clients["now"] = clients["now"], unreachable
        assert await check() is False
    finally:
        await service.stop()
        await healthy.aclose()
        await unreachable.aclose()
