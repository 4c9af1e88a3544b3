"""The inference cache on a real Redis: hits, coalescing within a replica and across replicas
(two caches with their own Redis clients), takeover when the leader fails or dies, and TTLs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from zhongshu.agent.adapters.inference_cache import (
    KEY_PREFIX,
    InferenceCache,
    cache_key,
    fingerprint,
    lock_key,
)


@pytest_asyncio.fixture
async def other_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A second client: another replica's connection."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def fresh_key() -> str:
    return fingerprint("test-model", {"q": uuid.uuid4().hex})


def counting(
    value: bytes, *, delay_s: float = 0.0
) -> tuple[Callable[[], Awaitable[bytes]], list[int]]:
    calls: list[int] = []

    async def compute() -> bytes:
        calls.append(1)
        await asyncio.sleep(delay_s)
        return value

    return compute, calls


def test_the_fingerprint_ignores_dict_order_and_includes_the_model() -> None:
    a = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    b = {"temperature": 0.2, "messages": [{"content": "hi", "role": "user"}]}
    assert fingerprint("m", a) == fingerprint("m", b)
    assert fingerprint("m", a) != fingerprint("n", a)
    assert fingerprint("m", a) != fingerprint("m", {**a, "temperature": 0.3})
    assert fingerprint("m", a).startswith(KEY_PREFIX)
    assert len(fingerprint("m", a)) == len(KEY_PREFIX) + 64
    # The model and the request are separated: moving bytes between them changes the key.
    assert cache_key("ab", b"c") != cache_key("a", b"bc")


async def test_the_same_request_twice_is_a_hit_and_computed_once(redis: Redis) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5)
    key = fresh_key()
    compute, calls = counting(b"answer")

    assert await cache.get_or_compute(key, compute) == (b"answer", "miss")
    assert await cache.get_or_compute(key, compute) == (b"answer", "hit")
    assert len(calls) == 1
    await cache.drain()  # the answer went out before it was stored
    assert await cache.get(key) == b"answer"
    assert not await redis.exists(lock_key(key))


async def test_the_answer_has_the_ttl(redis: Redis) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5)
    key = fresh_key()
    await cache.get_or_compute(key, counting(b"a")[0])
    await cache.drain()
    assert 0 < await redis.pttl(key) <= 60_000

    other = fresh_key()
    await cache.put(other, b"b")
    assert await cache.get(other) == b"b"
    assert 0 < await redis.pttl(other) <= 60_000


async def test_the_leader_keeps_its_lock_while_it_computes_past_the_lock_ttl(
    redis: Redis,
) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=0.3)
    key = fresh_key()
    held: list[bool] = []

    async def compute() -> bytes:
        for _ in range(4):  # 0.6 s: twice the lock's TTL, renewed every 0.1 s
            await asyncio.sleep(0.15)
            held.append(bool(await redis.exists(lock_key(key))))
        return b"slow answer"

    assert await cache.get_or_compute(key, compute) == (b"slow answer", "miss")
    assert held == [True] * 4
    assert not await redis.exists(lock_key(key))


async def test_a_computed_answer_is_returned_before_it_is_stored_and_shared_meanwhile(
    redis: Redis,
) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5)
    key = fresh_key()
    compute, calls = counting(b"answer")
    stored = asyncio.Event()
    store = cache._store

    async def slow_store(**kwargs: object) -> object:
        await stored.wait()
        return await store(**kwargs)

    cache._store = slow_store  # type: ignore[method-assign,assignment]
    assert await cache.get_or_compute(key, compute) == (b"answer", "miss")
    assert await cache.get_or_compute(key, compute) == (b"answer", "hit")  # still storing
    assert await redis.exists(lock_key(key))
    stored.set()
    await cache.drain()
    assert await cache.get(key) == b"answer"
    assert not await redis.exists(lock_key(key))
    assert len(calls) == 1


async def test_concurrent_identical_calls_in_one_replica_compute_once(redis: Redis) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5)
    key = fresh_key()
    compute, calls = counting(b"answer", delay_s=0.1)

    results = await asyncio.gather(*(cache.get_or_compute(key, compute) for _ in range(10)))

    assert len(calls) == 1
    assert {value for value, _ in results} == {b"answer"}
    assert Counter(how for _, how in results) == {"miss": 1, "coalesced": 9}


async def test_two_replicas_racing_compute_once(redis: Redis, other_redis: Redis) -> None:
    replicas = [
        InferenceCache(client, ttl_s=60, lock_ttl_s=5, poll_s=0.01)
        for client in (redis, other_redis)
    ]
    key = fresh_key()
    compute, calls = counting(b"answer", delay_s=0.5)

    results = await asyncio.gather(
        *(replicas[i % 2].get_or_compute(key, compute) for i in range(6))
    )

    assert len(calls) == 1
    assert {value for value, _ in results} == {b"answer"}
    assert Counter(how for _, how in results) == {"miss": 1, "coalesced": 5}


async def test_a_failed_compute_reaches_its_waiters_and_is_not_cached(redis: Redis) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5)
    key = fresh_key()

    async def failing() -> bytes:
        await asyncio.sleep(0.05)
        raise RuntimeError("upstream 500")

    results = await asyncio.gather(
        *(cache.get_or_compute(key, failing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await cache.get(key) is None
    assert not await redis.exists(lock_key(key))  # freed at once, not left to expire

    assert await cache.get_or_compute(key, counting(b"ok")[0]) == (b"ok", "miss")


async def test_when_the_leader_fails_a_waiting_replica_takes_over(
    redis: Redis, other_redis: Redis
) -> None:
    # A long lock TTL: the takeover must come from the lock being freed, not from its expiry.
    leader = InferenceCache(redis, ttl_s=60, lock_ttl_s=600, poll_s=0.01)
    waiter = InferenceCache(other_redis, ttl_s=60, lock_ttl_s=600, poll_s=0.01)
    key = fresh_key()
    computing = asyncio.Event()

    async def failing() -> bytes:
        computing.set()
        await asyncio.sleep(0.1)
        raise RuntimeError("upstream 500")

    compute, calls = counting(b"answer")
    led = asyncio.create_task(leader.get_or_compute(key, failing))
    await computing.wait()
    waited = asyncio.create_task(waiter.get_or_compute(key, compute))

    with pytest.raises(RuntimeError, match="upstream 500"):
        await led
    assert await waited == (b"answer", "miss")
    assert len(calls) == 1


async def test_when_the_leader_dies_a_waiter_computes_after_its_lock_expires(
    redis: Redis,
) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5, poll_s=0.01)
    key = fresh_key()
    # A replica took the lock and was killed: nobody renews or frees it.
    await redis.set(lock_key(key), "dead-replica", px=300)
    compute, calls = counting(b"answer")

    assert await cache.get_or_compute(key, compute) == (b"answer", "miss")
    assert len(calls) == 1


async def test_a_waiter_gives_up_at_its_deadline(redis: Redis) -> None:
    # Repeated: redis-py can swallow the cancellation that arrives while a script call waits,
    # and the poll then ran on until the held lock expired and computed (about 1 time in 4
    # before runtime.cancellation's check).
    for _ in range(20):
        cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5, poll_s=0.01)
        key = fresh_key()
        await redis.set(lock_key(key), "another-replica", px=60_000)
        compute, calls = counting(b"answer")

        with pytest.raises(TimeoutError):
            await cache.get_or_compute(key, compute, deadline=time.monotonic() + 0.1)
        assert calls == []
        assert await redis.get(lock_key(key)) == b"another-replica"


async def test_the_lock_is_renewed_while_a_long_compute_runs(
    redis: Redis, other_redis: Redis
) -> None:
    # The compute outlasts the lock TTL several times over; renewal keeps the other out.
    replicas = [
        InferenceCache(client, ttl_s=60, lock_ttl_s=1.0, poll_s=0.02)
        for client in (redis, other_redis)
    ]
    key = fresh_key()
    compute, calls = counting(b"answer", delay_s=2.5)

    results = await asyncio.gather(*(r.get_or_compute(key, compute) for r in replicas))

    assert len(calls) == 1
    assert sorted(how for _, how in results) == ["coalesced", "miss"]


async def test_when_every_caller_leaves_the_compute_is_cancelled_and_the_lock_freed(
    redis: Redis,
) -> None:
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=600)
    key = fresh_key()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def endless() -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"never"

    caller = asyncio.create_task(cache.get_or_compute(key, endless))
    await started.wait()
    assert await redis.exists(lock_key(key))
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()
    assert not await redis.exists(lock_key(key))
    assert await cache.get(key) is None


async def test_results_are_counted_by_kind(redis: Redis) -> None:
    def count(result: str) -> float:
        value = REGISTRY.get_sample_value("zhongshu_agent_cache_requests_total", {"result": result})
        return value or 0.0

    before = {r: count(r) for r in ("hit", "miss", "coalesced")}
    cache = InferenceCache(redis, ttl_s=60, lock_ttl_s=5)
    key = fresh_key()
    compute, _ = counting(b"a", delay_s=0.05)
    await asyncio.gather(cache.get_or_compute(key, compute), cache.get_or_compute(key, compute))
    await cache.get_or_compute(key, compute)

    after = {r: count(r) - before[r] for r in before}
    assert after == {"hit": 1, "miss": 1, "coalesced": 1}
