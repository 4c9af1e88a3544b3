"""The callback URLs a task request named for itself (``deliver_to`` of kind ``callback``),
remembered in Redis for the hot tier's 7 days, and the barrier that tells whether every task
request stored before an event has been remembered yet.

The barrier exists because a task's request and its events are handled concurrently (several
replicas, several messages in flight, a request that is being retried): without it, an event
read before its request would be posted to the subscriptions but never to the task's own URLs."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Iterable

from nats.js.client import JetStreamContext
from redis.asyncio import Redis

from zhongshu.contracts.hotcache import HOT_TTL_S


class TaskCallbackStore:
    def __init__(self, redis: Redis, *, prefix: str = "zhongshu:notifier:task-callbacks:") -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, tenant: str, task_id: str) -> str:
        # Hashed: tenants and task ids are free text, and a key must not be forgeable across
        # tenants by a task id holding the separator.
        material = f"{len(tenant)}:{tenant}:{task_id}".encode("utf-8", "surrogatepass")
        return self._prefix + hashlib.sha256(material).hexdigest()[:40]

    async def remember(self, tenant: str, task_id: str, urls: Iterable[str]) -> None:
        """Idempotent (a set), so a redelivered request changes nothing."""
        values = sorted(set(urls))
        if not values:
            return
        key = self._key(tenant, task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, *values)
            pipe.expire(key, HOT_TTL_S)
            await pipe.execute()

    async def urls(self, tenant: str, task_id: str) -> list[str]:
        members = await self._redis.smembers(self._key(tenant, task_id))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


class RequestBarrier:
    """Whether the consumer that remembers task callbacks (``durable`` on ``stream``) has
    handled every request stored before a given message, read from its consumer info:

    - its ack floor is at or past the message's stream sequence (same stream only): every
      request below it is acked, i.e. remembered; or
    - it had nothing pending and nothing unacked at a moment after the message was received:
      every request stored before then is remembered (this works across streams, for the
      WORKFLOWS run events of a task).

    Checks are coalesced: one consumer-info request answers every message received before it
    was sent, and what it proved is kept, so a quiet system asks once per wave of events."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._js = js
        self._stream = stream
        self._durable = durable
        self._clock = clock or asyncio.get_running_loop().time
        self._acked_through = 0
        self._caught_up_at = -math.inf
        self._lock = asyncio.Lock()

    def now(self) -> float:
        return self._clock()

    def _passed(self, received_at: float, stream: str, sequence: int) -> bool:
        if stream == self._stream and 0 < sequence <= self._acked_through:
            return True
        return received_at <= self._caught_up_at

    async def passed(self, *, received_at: float, stream: str, sequence: int) -> bool:
        """One look (at most one consumer-info request); ``received_at`` is ``now()`` taken
        once the message was in hand."""
        if self._passed(received_at, stream, sequence):
            return True
        async with self._lock:
            if self._passed(received_at, stream, sequence):
                return True
            asked_at = self.now()
            info = await self._js.consumer_info(self._stream, self._durable)
            if not info.num_pending and not info.num_ack_pending:
                self._caught_up_at = max(self._caught_up_at, asked_at)
            if info.ack_floor is not None:
                self._acked_through = max(self._acked_through, info.ack_floor.stream_seq)
            return self._passed(received_at, stream, sequence)

    async def wait(
        self, *, received_at: float, stream: str, sequence: int, within_s: float
    ) -> bool:
        """Look until passed or ``within_s`` is over; False means not yet (retry later)."""
        deadline = self.now() + within_s
        while True:
            if await self.passed(received_at=received_at, stream=stream, sequence=sequence):
                return True
            if self.now() >= deadline:
                return False
            await asyncio.sleep(0.05)
