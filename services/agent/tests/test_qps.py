"""The cluster-wide model-call schedule and the per-replica gate, on a real Redis: several
limiters sharing one key stand for several agent replicas."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from zhongshu.agent.adapters.qps import (
    DEFAULT_MARGIN,
    ClusterRateLimiter,
    ModelGate,
    RateLimitTimeout,
)


def fresh_key() -> str:
    return f"zhongshu:test:qps:{uuid.uuid4().hex}"


async def test_three_replicas_never_exceed_qps_in_any_one_second_window(redis_url: str) -> None:
    qps, calls, key = 10, 40, fresh_key()
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    limiters = [ClusterRateLimiter(c, key=key, qps=qps) for c in clients]
    times: list[float] = []

    async def call(limiter: ClusterRateLimiter) -> None:
        await limiter.acquire()
        times.append(time.monotonic())

    try:
        await asyncio.gather(*(call(limiters[i % 3]) for i in range(calls)))
    finally:
        for client in clients:
            await client.aclose()

    times.sort()
    assert len(times) == calls
    # qps + 1 calls never fit in one second: any window [t, t + 1) holds at most qps of them.
    spans = [times[i + qps] - times[i] for i in range(calls - qps)]
    assert min(spans) >= 1.0, f"{qps + 1} calls within {min(spans):.3f}s"
    # Evenly spaced, not bunched then idle: the whole run takes at least (n - 1) intervals.
    assert times[-1] - times[0] >= (calls - 1) / qps * 0.99


async def test_a_late_caller_holds_back_the_call_a_window_after_it_not_the_next_one(
    redis: Redis,
) -> None:
    # At 2 qps the fence allows 2 starts per window (1.04 s). X starts, A and B book the next
    # slots, A wakes 0.3 s late (a stalled event loop). B may still start on its slot: X and A
    # are all the window holds. C, booked next, must wait until A's start is a window old.
    key = fresh_key()
    x, a, b, c = (ClusterRateLimiter(redis, key=key, qps=2) for _ in range(4))
    calls, window_s = x.window
    assert calls == 2
    await x.acquire()
    booked = time.monotonic()
    slot_a, slot_b = await a.book(), await b.book()
    assert not slot_a.started
    assert not slot_b.started
    await asyncio.sleep(slot_a.wait_s + 0.3)
    await a.fence()
    a_started = time.monotonic()
    await asyncio.sleep(max(0.0, booked + slot_b.wait_s - time.monotonic()))
    await b.fence()
    b_started = time.monotonic()
    await c.acquire()
    c_started = time.monotonic()

    assert b_started - a_started < a.interval_s * 0.9  # not pushed back behind A
    assert c_started - a_started >= window_s * 0.99  # 3 starts never fit in one window


async def test_a_slot_due_at_once_starts_in_the_booking_round_trip(redis: Redis) -> None:
    limiter = ClusterRateLimiter(redis, key=fresh_key(), qps=1)
    first = await limiter.book()
    assert first == (0.0, True)  # booked and past the fence: no second script
    second = await limiter.book()
    assert not second.started
    assert second.wait_s > 0.9


async def test_a_refused_deadline_books_no_slot(redis: Redis) -> None:
    key = fresh_key()
    limiter = ClusterRateLimiter(redis, key=key, qps=0.1)  # a slot every 10.5 s
    await limiter.acquire()  # the first slot is now
    booked = await redis.get(key)

    with pytest.raises(RateLimitTimeout) as refused:
        await limiter.acquire(deadline=time.monotonic() + 0.2)
    assert refused.value.wait_s > 0.2  # the wait it would have had
    with pytest.raises(RateLimitTimeout):
        await limiter.acquire(deadline=time.monotonic() - 1)  # already past: no round trip

    assert await redis.get(key) == booked


async def test_max_wait_refuses_like_a_deadline(redis: Redis) -> None:
    key = fresh_key()
    limiter = ClusterRateLimiter(redis, key=key, qps=0.1, max_wait_s=0.5)
    await limiter.acquire()
    booked = await redis.get(key)
    with pytest.raises(RateLimitTimeout):
        await limiter.acquire()
    assert await redis.get(key) == booked


async def test_the_schedule_expires_once_its_last_slot_has_passed(redis: Redis) -> None:
    key = fresh_key()
    limiter = ClusterRateLimiter(redis, key=key, qps=2)
    await limiter.acquire()
    ttl_ms = await redis.pttl(key)
    assert 0 < ttl_ms <= math.ceil(limiter.interval_s * 1000) + 1  # PX rounds up, plus 1 ms


async def test_a_new_qps_applies_to_the_next_booking(redis: Redis) -> None:
    limiter = ClusterRateLimiter(redis, key=fresh_key(), qps=100)
    await limiter.acquire()
    await limiter.acquire()

    limiter.qps = 4
    started = time.monotonic()
    await limiter.acquire()  # booked at or after `started`, the next one 0.25 s x 1.02 later
    await limiter.acquire()
    assert time.monotonic() - started >= 0.25 * (1 + DEFAULT_MARGIN) * 0.99

    with pytest.raises(ValueError, match="qps"):
        limiter.qps = 0


async def test_the_gate_lets_at_most_max_concurrent_calls_in(redis: Redis) -> None:
    waits: list[tuple[str, float]] = []
    gate = ModelGate(
        ClusterRateLimiter(redis, key=fresh_key(), qps=1000),
        max_concurrent=3,
        on_wait=lambda limit, seconds: waits.append((limit, seconds)),
    )
    inside = peak = 0

    async def call() -> None:
        nonlocal inside, peak
        async with gate():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(call() for _ in range(12)))

    assert peak == 3
    assert inside == 0
    assert sorted({limit for limit, _ in waits}) == ["concurrency", "qps"]
    assert len(waits) == 2 * 12


async def test_the_gate_gives_up_at_the_deadline_and_frees_its_permit(redis: Redis) -> None:
    gate = ModelGate(ClusterRateLimiter(redis, key=fresh_key(), qps=1000), max_concurrent=1)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with gate():
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    with pytest.raises(RateLimitTimeout):
        async with gate(deadline=time.monotonic() + 0.05):
            pytest.fail("entered while the only permit was held")
    release.set()
    await holder

    async with gate(deadline=time.monotonic() + 60):
        pass  # the permit came back after the refusal and after the holder left


async def test_the_gate_records_wait_times_in_the_histogram(redis: Redis) -> None:
    def count(limit: str) -> float:
        value = REGISTRY.get_sample_value(
            "zhongshu_agent_limiter_wait_seconds_count", {"limit": limit}
        )
        return value or 0.0

    before = count("qps"), count("concurrency")
    gate = ModelGate(ClusterRateLimiter(redis, key=fresh_key(), qps=1000), max_concurrent=2)
    async with gate():
        pass
    assert (count("qps"), count("concurrency")) == (before[0] + 1, before[1] + 1)
