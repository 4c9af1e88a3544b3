"""``Service.readiness_ping``: ready while the client in the service's state answers."""

from __future__ import annotations

from redis.asyncio import Redis

from zhongshu.runtime.service import Service


async def test_ready_while_the_client_answers_and_not_before_or_after(redis_url: str) -> None:
    service = Service("probe")
    service.readiness_ping("redis")
    check = service._checks["redis"]
    assert await check() is False  # not opened yet
    client = Redis.from_url(redis_url)
    service.state["redis"] = client
    assert await check() is True
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    service.state["redis"] = unreachable
    assert await check() is False
    await client.aclose()
    await unreachable.aclose()
