"""The Redis-backed pieces on a real Redis: tokens refreshed before they expire, one rate-limit
bucket shared by replicas, and alert windows that keep their roles across redeliveries (a
streaming card's turns: test_stream_state.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis

from zhongshu.notifier.adapters.alertwindow import AlertWindow
from zhongshu.notifier.adapters.ratelimit import SlidingWindowLimiter
from zhongshu.platforms.tokens import TokenCache


async def test_a_token_is_cached_then_fetched_again_before_it_expires(redis: Redis) -> None:
    fetched: list[str] = []

    async def fetch() -> tuple[str, float]:
        fetched.append(f"t{len(fetched)}")
        return fetched[-1], 2.0  # a short-lived token is refreshed at half its life

    key = uuid.uuid4().hex
    replica_a, replica_b = TokenCache(redis), TokenCache(redis)
    assert await replica_a.get(key, fetch) == "t0"
    assert await replica_b.get(key, fetch) == "t0"  # shared through Redis
    await asyncio.sleep(1.1)
    assert await replica_a.get(key, fetch) == "t1"
    await replica_a.invalidate(key, "t1")
    assert await replica_b.get(key, fetch) == "t2"
    assert fetched == ["t0", "t1", "t2"]


async def test_two_replicas_share_one_bucket_and_never_exceed_it(redis: Redis) -> None:
    key = uuid.uuid4().hex
    replicas = [SlidingWindowLimiter(redis), SlidingWindowLimiter(redis)]
    taken: list[float] = []

    async def send(limiter: SlidingWindowLimiter) -> None:
        _, confirm = await limiter.take(key, 5, 0.5)
        taken.append(time.monotonic())
        await confirm()

    started = time.monotonic()
    await asyncio.gather(*(send(replicas[i % 2]) for i in range(15)))
    taken.sort()
    assert taken[-1] - started >= 1.0  # 15 at 5 per 0.5 s: three windows
    for first in taken:
        assert sum(1 for t in taken if first <= t < first + 0.5) <= 5


async def test_a_redelivered_alert_keeps_its_role_and_is_counted_once(redis: Redis) -> None:
    window = AlertWindow(redis)
    fold = uuid.uuid4().hex
    first = await window.join(fold, "a1", 0.5)
    closer = await window.join(fold, "a2", 0.5)
    repeat = await window.join(fold, "a3", 0.5)
    again = await window.join(fold, "a2", 0.5)  # redelivered
    assert (first.role, closer.role, repeat.role, again.role) == (
        "first",
        "closer",
        "repeat",
        "closer",
    )
    await asyncio.sleep(closer.left_s)
    assert await window.close(fold, closer.window_id, 0.5) == 2
    assert await window.close(fold, closer.window_id, 0.5) == 2
    assert (await window.join(fold, "a4", 0.5)).role == "first"  # a new window
