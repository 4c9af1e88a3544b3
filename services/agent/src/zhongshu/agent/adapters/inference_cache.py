"""The inference cache (R20): exact-match answers in Redis with a TTL, and identical requests in
flight at the same time coalesced into one upstream call, within a replica and across replicas.

Keys:

- ``zhongshu:llm:cache:<sha256 hex>``: the cached answer (bytes, PX ``ttl_s``); see
  :func:`cache_key`.
- ``{<that key>}:lock``: held (``SET NX PX lock_ttl_s``, a random token) by the one caller
  computing that answer. The hash tag puts it in the answer's Redis Cluster slot, so the scripts
  touch one slot. The holder renews it while computing, so ``lock_ttl_s`` only bounds how long
  the others wait for a leader that died.

Within a replica, callers with the same key share one asyncio task (a singleflight), so the
replica asks Redis once. Across replicas, the ones that do not get the lock poll every
``poll_s`` for the answer, or for the lock to vanish without one (the leader failed or died),
in which case one of them takes over. Polling rather than pub/sub: a waiter needs no
subscriber connection, a vanished lock is noticed the same way as an answer, and ``poll_s`` is
small next to a model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from prometheus_client import Counter
from redis.asyncio import Redis

from zhongshu.runtime.cancellation import raise_if_cancelled

KEY_PREFIX = "zhongshu:llm:cache:"

log = logging.getLogger("zhongshu.agent.cache")

Outcome = Literal["hit", "miss", "coalesced"]

CACHE_REQUESTS = Counter(
    "zhongshu_agent_cache_requests_total",
    "Inference-cache lookups by result: hit (stored answer), miss (computed here), coalesced "
    "(waited for an identical call in flight, in this replica or another)",
    ("result",),
)


def cache_key(model: str, request_fingerprint: bytes) -> str:
    """The answer's key. The model is hashed with the request (NUL-separated, so no pair of
    model and request can collide with another) and keys have a fixed length."""
    digest = hashlib.sha256(model.encode())
    digest.update(b"\0")
    digest.update(request_fingerprint)
    return KEY_PREFIX + digest.hexdigest()


def fingerprint(model: str, payload: Any) -> str:
    """The cache key of a request: ``payload`` (messages, tools, parameters) is encoded with
    sorted keys, so two requests that differ only in dict order share their answer."""
    return cache_key(model, msgspec.json.encode(payload, order="sorted"))


def lock_key(key: str) -> str:
    return "{" + key + "}:lock"


# KEYS: 1 answer, 2 lock. ARGV: 1 token, 2 lock TTL ms.
# Returns {1, answer} (a hit), {2, ''} (the lock is now ours: compute) or {0, ''} (someone else
# computes: wait). One script, so an answer stored just before the lock was freed is never
# missed by a caller that then takes the lock.
_TRY = """
local answer = redis.call('GET', KEYS[1])
if answer then return {1, answer} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, ''} end
return {0, ''}
"""

# KEYS: 1 answer, 2 lock. ARGV: 1 answer, 2 TTL ms, 3 token.
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: 1 lock. ARGV: 1 token, 2 TTL ms (renew) or '' (release). Only the holder may touch it.
_OWN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


@dataclass
class _Flight:
    """One resolution in progress in this replica and how many callers wait for it.
    ``answer`` is set as soon as the answer is known; ``task`` then goes on storing a computed
    answer, so the caller's reply does not wait for that round trip (P4)."""

    answer: asyncio.Future[tuple[bytes, Outcome]]
    task: asyncio.Task[None]
    waiters: int = 0


def _as_bytes(value: bytes | str) -> bytes:
    # Answers are opaque bytes: a client with decode_responses=True would hand back str.
    return value if isinstance(value, bytes) else value.encode()


class InferenceCache:
    """Exact-match answers with coalescing. ``compute`` is called at most once per key at a
    time across the cluster (unless a leader outlives its lock, which renewal prevents while
    its process runs); a failed compute raises to its callers and is never cached."""

    def __init__(
        self, redis: Redis, *, ttl_s: float, lock_ttl_s: float, poll_s: float = 0.05
    ) -> None:
        if ttl_s <= 0 or lock_ttl_s <= 0 or poll_s <= 0:
            raise ValueError("ttl_s, lock_ttl_s and poll_s must be > 0")
        self._redis = redis
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._lock_ttl_ms = max(1, round(lock_ttl_s * 1000))
        self._poll_s = poll_s
        self._try = redis.register_script(_TRY)
        self._store = redis.register_script(_STORE)
        self._own = redis.register_script(_OWN)
        self._flights: dict[str, _Flight] = {}

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        return None if value is None else _as_bytes(value)

    async def put(self, key: str, value: bytes) -> None:
        await self._redis.set(key, value, px=self._ttl_ms)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        *,
        deadline: float | None = None,
    ) -> tuple[bytes, Outcome]:
        """The answer for ``key`` and how it was obtained.

        ``deadline`` (a ``time.monotonic()`` value) bounds this caller's wait: past it, raises
        ``TimeoutError``. The shared work goes on while any caller of this replica still waits
        for it, and is cancelled when the last one leaves (by deadline or cancellation), which
        returns once the lock is freed. A computed answer is returned before it is stored:
        ``drain`` waits for the stores still going on.
        """
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            answer = asyncio.get_running_loop().create_future()
            flight = _Flight(answer, asyncio.create_task(self._resolve(key, compute, answer)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _: self._forget(key, flight))
        known = flight.answer.done()
        flight.waiters += 1
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            async with asyncio.timeout(remaining):
                value, how = await asyncio.shield(flight.answer)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.answer.done():
                # Nobody wants the answer any more: stop, and wait until the lock is freed, so
                # a replica shutting down leaves no lock behind for the others to wait out.
                flight.task.cancel()
                await asyncio.wait([flight.task])
        if known:
            how = "hit"  # computed here and being stored: it was there when asked
        elif joined and how != "hit":
            how = "coalesced"
        CACHE_REQUESTS.labels(how).inc()
        return value, how

    async def drain(self) -> None:
        """Wait until every answer computed here is stored (at shutdown, before Redis closes)."""
        flights = [f.task for f in self._flights.values()]
        if flights:
            await asyncio.wait(flights)

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        error = None if flight.task.cancelled() else flight.task.exception()
        if flight.answer.done():
            if error is not None:  # the answer went out; only its store failed
                log.warning("could not store the answer %s: %r", key, error)
        elif error is not None:
            flight.answer.set_exception(error)
            # Every waiter may have left (deadline) just as it failed: mark it seen, so asyncio
            # does not log "exception never retrieved"; the waiters got it if they were there.
            flight.answer.exception()
        else:
            flight.answer.cancel()

    async def _resolve(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        answer: asyncio.Future[tuple[bytes, Outcome]],
    ) -> None:
        """Find the answer in Redis, or wait for the replica computing it, or compute it; a
        computed one is handed over (``answer``) before it is stored."""
        token = uuid.uuid4().hex
        keys = [key, lock_key(key)]
        waited = False
        while True:
            found, stored = await self._try(keys=keys, args=[token, self._lock_ttl_ms])
            raise_if_cancelled()
            if int(found) == 1:
                answer.set_result((_as_bytes(stored), "coalesced" if waited else "hit"))
                return
            if int(found) == 2:
                await self._lead(keys, token, compute, answer)
                return
            waited = True
            await asyncio.sleep(self._poll_s)

    async def _lead(
        self,
        keys: list[str],
        token: str,
        compute: Callable[[], Awaitable[bytes]],
        answer: asyncio.Future[tuple[bytes, Outcome]],
    ) -> None:
        """Compute with the lock held (and renewed); store the answer and free the lock in one
        step. On failure or cancellation the lock is freed at once, so a waiting replica takes
        over without waiting for it to expire."""
        renewal = _Renewal(self._renew(keys[1], token), self._renew_period_s())
        try:
            value = await compute()
        except BaseException:
            renewal.cancel()
            with contextlib.suppress(Exception):
                # Shielded: a cancelled leader still frees its lock for the other replicas.
                await asyncio.shield(self._own(keys=[keys[1]], args=[token, ""]))
            raise
        renewal.cancel()
        answer.set_result((value, "miss"))
        await self._store(keys=keys, args=[value, self._ttl_ms, token])

    def _renew_period_s(self) -> float:
        # A third of the TTL: two renewals may be lost or late before the lock lapses.
        return max(self._lock_ttl_ms / 3000, 0.001)

    async def _renew(self, lock: str, token: str) -> None:
        period = self._renew_period_s()
        while True:
            try:
                owned = await self._own(keys=[lock], args=[token, self._lock_ttl_ms])
                raise_if_cancelled()
                if not owned:
                    return  # lost (expired during a stall): someone else may compute too
            except Exception:
                # Redis unreachable for a moment: the compute goes on, the next tick retries.
                log.warning("could not renew the cache lock %s", lock, exc_info=True)
            await asyncio.sleep(period)


class _Renewal:
    """Renews a lock from its first due time on. Most answers come well before it: a timer is
    all they cost, not a task started and cancelled for every computed answer."""

    def __init__(self, renew: Coroutine[Any, Any, None], delay_s: float) -> None:
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._renew)

    def cancel(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        else:
            self._renew.close()  # never started: no "coroutine was never awaited" warning
