"""The model-call gate: a cluster-wide QPS schedule in Redis shared by every agent replica, plus
``MAX_CONCURRENT`` calls in flight per replica.

Key: ``zhongshu:llm:qps`` (by default) holds the theoretical arrival time (TAT) of the next free
slot, in microseconds of the Redis server clock, with a PX expiry at that time.

Why GCRA *with reservation*: each caller atomically books the next slot (``tat = max(stored,
now)``, store ``tat + interval``) and sleeps until it. Slots are spaced exactly one interval
apart across all replicas on any host (one clock, the server's), so there is no burst; callers
are served in booking order, so nobody starves.

Why a fence at the start as well: a slot says when a call *may* start, but sleep jitter and
event-loop stalls can only make a caller start later than its slot, which bunched it with the
next caller's (P5 saw 11 calls in one second with slots 5 % apart). So a caller that wakes for
its slot passes ``<key>:start`` last: one script on the server clock that lets it start only
one interval after the previous start, else tells it how long to wait. Lateness then pushes
later calls back instead of bunching them, and the margin only has to cover the short way from
the fence to the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import Histogram
from redis.asyncio import Redis

from zhongshu.runtime.cancellation import raise_if_cancelled

DEFAULT_KEY = "zhongshu:llm:qps"

# Starts are spaced a little more than 1/qps apart, so that the way from the fence to the
# provider (a Redis reply, the HTTP request, the provider's own clock) may vary by up to 4 % of a
# second across a window of QPS calls before the provider could count QPS + 1 in one second;
# the price is the mean rate under saturation, at most qps / 1.04. Measured with bench/agent.py
# (P5, 3 replica processes, 500 commands, cap 10): with the fence, 2 % and 3 % still let 11
# calls into one second in some runs (9.63-9.73/s); 4 % gave 9.51-9.52/s with no window above
# 10 in three runs. Without the fence, 5 % was needed (9.43/s).
DEFAULT_MARGIN = 0.04

LIMITER_WAIT = Histogram(
    "zhongshu_agent_limiter_wait_seconds",
    "Time a model call waited at the gate: for a concurrency permit or for its QPS slot",
    ("limit",),
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# KEYS: 1 TAT. ARGV: 1 interval us, 2 the longest wait the caller accepts in us (-1 = any).
# Returns {reserved (1/0), wait us}: the wait until the slot, or, when refused, the wait the
# caller would have had. A refusal books nothing, so a caller that gives up burns no slot.
_RESERVE = """
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if max_wait >= 0 and wait > max_wait then return {0, wait} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, wait}
"""

# KEYS: 1 the last start. ARGV: 1 interval us. Returns 0 (start now; recorded) or the us to wait.
_START = """
local interval = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if now - last < interval then return last + interval - now end
redis.call('SET', KEYS[1], string.format('%d', now), 'PX', math.ceil(interval / 1000) + 1)
return 0
"""


class RateLimitTimeout(TimeoutError):
    """The caller's slot (or a concurrency permit) would come after its deadline; nothing was
    booked. A ``TimeoutError``, so a caller's time-budget handling covers it."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"the next model-call slot is {wait_s:.3f}s away, past the deadline")
        self.wait_s = wait_s


class ClusterRateLimiter:
    """Books one slot of the shared schedule per call and sleeps until it.

    ``qps`` may be changed at run time (live config): the interval is an argument of the
    script, so the next booking uses the new rate, after the slots already booked.

    Cancellation: a caller cancelled while it sleeps keeps its slot, which then goes unused.
    It cannot be given back safely: later callers have booked the slots after it, and moving
    the TAT back would hand the same time to two callers. An unused slot only lowers the rate,
    never raises it.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key: str = DEFAULT_KEY,
        qps: float,
        max_wait_s: float | None = None,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        if margin < 0:
            raise ValueError("margin must be >= 0")
        self._script = redis.register_script(_RESERVE)
        self._start = redis.register_script(_START)
        self._key = key
        self._margin = margin
        self.max_wait_s = max_wait_s
        self.qps = qps

    @property
    def qps(self) -> float:
        return self._qps

    @qps.setter
    def qps(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"qps must be > 0, got {value!r}")
        self._qps = value

    @property
    def interval_s(self) -> float:
        """The spacing of slots: 1/qps plus the safety margin."""
        return (1 + self._margin) / self._qps

    async def acquire(self, *, deadline: float | None = None) -> float:
        """Wait for this caller's slot; returns the seconds spent (booking and sleeping).

        ``deadline`` is a ``time.monotonic()`` value. When the slot would come after it (or
        after ``max_wait_s``), raises :class:`RateLimitTimeout` without booking anything.
        """
        started = time.monotonic()
        budget = math.inf if self.max_wait_s is None else self.max_wait_s
        if deadline is not None:
            budget = min(budget, deadline - started)
        if budget < 0:
            raise RateLimitTimeout(0.0)
        wait_s = await self.book(budget)
        if wait_s > 0:
            # The wait counts from the server's clock reading, before the reply travelled back:
            # sleeping it in full after the reply errs late, which is the safe side.
            await asyncio.sleep(wait_s)
        await self.fence(deadline)
        return time.monotonic() - started

    async def book(self, budget_s: float = math.inf) -> float:
        """Book the next slot; returns the seconds until it. Raises
        :class:`RateLimitTimeout`, booking nothing, when that is more than ``budget_s``."""
        reserved, wait_us = await self._script(
            keys=[self._key],
            args=[
                self._interval_us(),
                -1 if math.isinf(budget_s) else int(budget_s * 1_000_000),
            ],
        )
        raise_if_cancelled()
        wait_s = int(wait_us) / 1_000_000
        if not int(reserved):
            raise RateLimitTimeout(wait_s)
        return wait_s

    async def fence(self, deadline: float | None = None) -> None:
        """Start now if the previous call (any replica's) started one interval ago or more;
        else wait for that, and record this start."""
        while True:
            wait_us = int(
                await self._start(keys=[self._key + ":start"], args=[self._interval_us()])
            )
            raise_if_cancelled()
            if wait_us <= 0:
                return
            wait_s = wait_us / 1_000_000
            if deadline is not None and time.monotonic() + wait_s > deadline:
                raise RateLimitTimeout(wait_s)
            await asyncio.sleep(wait_s)

    def _interval_us(self) -> int:
        return max(1, round(self.interval_s * 1_000_000))


WaitObserver = Callable[[str, float], None]


def _observe(limit: str, seconds: float) -> None:
    LIMITER_WAIT.labels(limit).observe(seconds)


class ModelGate:
    """What the LLM client enters around every upstream HTTP attempt: first a permit of the
    replica's ``max_concurrent``, then a slot of the cluster-wide schedule.

    The permit comes first so a replica never books more slots than it can use right away: a
    slot booked by a caller still queued for a permit would go by unused. The permit is held
    for the whole attempt (streaming included) and released on exit; the slot is spent on
    entry. Wait times go to ``zhongshu_agent_limiter_wait_seconds{limit=concurrency|qps}`` (or
    to ``on_wait(limit, seconds)``).
    """

    def __init__(
        self,
        limiter: ClusterRateLimiter,
        max_concurrent: int,
        *,
        on_wait: WaitObserver = _observe,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.limiter = limiter
        self.max_concurrent = max_concurrent
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._on_wait = on_wait

    @contextlib.asynccontextmanager
    async def __call__(self, *, deadline: float | None = None) -> AsyncIterator[None]:
        """``async with gate(deadline=...)``: raises :class:`RateLimitTimeout` when the permit
        or the slot would come after ``deadline`` (a ``time.monotonic()`` value)."""
        started = time.monotonic()
        if deadline is None:
            await self._semaphore.acquire()
        else:
            try:
                async with asyncio.timeout(deadline - started):
                    await self._semaphore.acquire()
            except TimeoutError:
                raise RateLimitTimeout(time.monotonic() - started) from None
        try:
            self._on_wait("concurrency", time.monotonic() - started)
            self._on_wait("qps", await self.limiter.acquire(deadline=deadline))
            yield
        finally:
            self._semaphore.release()
