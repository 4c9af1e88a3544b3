"""The model-call gate: a cluster-wide QPS schedule in Redis shared by every agent replica, plus
``MAX_CONCURRENT`` calls in flight per replica.

Keys: ``zhongshu:llm:qps`` (by default) holds the theoretical arrival time (TAT) of the next free
slot, in microseconds of the Redis server clock, with a PX expiry at that time;
``{zhongshu:llm:qps}:starts`` the latest starts (its hash tag puts it in the TAT's Redis Cluster
slot, so one script may touch both).

Why GCRA *with reservation*: each caller atomically books the next slot (``tat = max(stored,
now)``, store ``tat + interval``) and sleeps until it. Slots are spaced exactly one interval
apart across all replicas on any host (one clock, the server's), so there is no burst; callers
are served in booking order, so nobody starves.

Why a fence at the start as well: a slot says when a call *may* start, but sleep jitter and
event-loop stalls can only make a caller start later than its slot, which bunched it with the
next callers' (P5 saw 11 calls in one second with slots 5 % apart). So a caller that wakes for
its slot passes ``<key>:starts`` last: a script on the server clock that lets it start only if
the ``n``-th start before it (``n`` = the calls a window allows, ``floor(qps)``) is at least one
window old, else tells it how long to wait. It bounds what the provider counts, calls per
window, and nothing stricter: the first fence (each start one interval after the previous one)
made every late caller push all later ones back, so lateness added up call after call and the
mean fell to 9.43-9.52/s under a backlog (P5). Now a late start only holds back the call ``n``
after it, and only if that one is early by the window's standard, which the slots' extra margin
(``SLOT_SLACK``) makes rare: the mean is the slots' rate.

When a caller's slot is due at once (the cap is not the bottleneck), the booking script passes
the fence too: one round trip instead of two.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

from prometheus_client import Histogram
from redis.asyncio import Redis

from zhongshu.runtime.cancellation import raise_if_cancelled

DEFAULT_KEY = "zhongshu:llm:qps"

# The fence's window is a little more than the second a provider counts in: ``n`` starts in
# (1 + margin) s, so the way from the fence to the provider (a Redis reply, the HTTP request, the
# provider's own clock, a stall of the provider's event loop that records arrivals late) may vary
# by up to 4.5 % of a second before the provider could count QPS + 1 calls in one second.
# Measured with bench/agent.py (P5, 3 replica processes, 500 commands, cap 10): 2 % and 3 % let
# 11 calls into one second in some loaded runs; 4 % and 4.5 % never did. The fake LLM of
# test_qps_cluster.py shares the test's event loop, whose stalls record arrivals late: on a
# loaded machine it counted 11 now and then at 4 % and 4.5 % alike, as with the first fence.
DEFAULT_MARGIN = 0.045
# Slots are spaced this much wider than the window allows (0.3 % of a window, 3 ms at 10 qps),
# so a caller on its slot finds the fence open even when the caller ``n`` before it was up to
# that much later than it: the fence only holds back callers after a stall, and lateness never
# adds up. The mean under a backlog is the slots' rate, qps / (1.045 x 1.003): 9.54/s at 10.
SLOT_SLACK = 0.003
# Past this many calls per window the window shrinks instead (``n`` starts per ``n`` intervals):
# the log stays short at a cap of 100,000/s, and so many calls a second are a rate, not a count.
MAX_WINDOW_CALLS = 100
LIMITER_WAIT = Histogram(
    "zhongshu_agent_limiter_wait_seconds",
    "Time a model call waited at the gate: for a concurrency permit or for its QPS slot",
    ("limit",),
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# The fence: ``now`` and ``window`` (us), ``n``, KEYS[2] the starts, newest first. Sets ``wait``
# to 0 (and records the start) when the n-th latest start is a window old, else to the us left.
_FENCE = """
local wait = 0
local nth = redis.call('LINDEX', KEYS[2], n - 1)
if nth and now - tonumber(nth) < window then
  wait = tonumber(nth) + window - now
else
  redis.call('LPUSH', KEYS[2], string.format('%d', now))
  redis.call('LTRIM', KEYS[2], 0, n - 1)
  redis.call('PEXPIRE', KEYS[2], math.ceil(window / 1000) + 1)
end
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: 1 TAT, 2 starts. ARGV: 1 interval us, 2 the longest wait the caller accepts in us (-1 =
# any), 3 window us, 4 n. Returns {reserved (1/0), wait us, started (1/0)}: the wait until the
# slot, or, when refused, the wait the caller would have had. A refusal books nothing, so a
# caller that gives up burns no slot. A slot due now also passes the fence when it is open
# (started = 1): the caller goes without a second round trip.
_RESERVE = (
    """
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, n = tonumber(ARGV[3]), tonumber(ARGV[4])
"""
    + _NOW
    + """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local slot = tat - now
if max_wait >= 0 and slot > max_wait then return {0, slot, 0} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1)
if slot > 0 then return {1, slot, 0} end
"""
    + _FENCE
    + """
if wait > 0 then return {1, 0, 0} end
return {1, 0, 1}
"""
)

# KEYS: 1 unused (the TAT, so both scripts name the same slot), 2 starts. ARGV: 1 window us,
# 2 n. Returns 0 (start now; recorded) or the us to wait.
_START = (
    """
local window, n = tonumber(ARGV[1]), tonumber(ARGV[2])
"""
    + _NOW
    + _FENCE
    + """
return wait
"""
)


class RateLimitTimeout(TimeoutError):
    """The caller's slot (or a concurrency permit) would come after its deadline; nothing was
    booked. A ``TimeoutError``, so a caller's time-budget handling covers it."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"the next model-call slot is {wait_s:.3f}s away, past the deadline")
        self.wait_s = wait_s


class Slot(NamedTuple):
    """A booked slot: the seconds until it, and whether the call may start at once (the slot
    was due and the fence open, both in the booking's round trip)."""

    wait_s: float
    started: bool


class ClusterRateLimiter:
    """Books one slot of the shared schedule per call, sleeps until it, then passes the fence.

    ``qps`` may be changed at run time (live config): the interval and the window are arguments
    of the scripts, so the next booking uses the new rate, after the slots already booked.

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
        self._reserve = redis.register_script(_RESERVE)
        self._start = redis.register_script(_START)
        self._keys = [key, "{" + key + "}:starts"]
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
        self._window_calls = max(1, min(MAX_WINDOW_CALLS, math.floor(value)))
        window_us = self._window_calls * (1 + self._margin) / value * 1_000_000
        self._window_us = max(1, round(window_us))
        self._interval_us = max(1, round(window_us / self._window_calls * (1 + SLOT_SLACK)))

    @property
    def interval_s(self) -> float:
        """The spacing of slots: 1/qps plus the margin and the slots' slack."""
        return self._interval_us / 1_000_000

    @property
    def window(self) -> tuple[int, float]:
        """The fence: at most ``calls`` starts in any ``seconds``."""
        return self._window_calls, self._window_us / 1_000_000

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
        slot = await self.book(budget)
        if slot.started:
            return time.monotonic() - started
        if slot.wait_s > 0:
            # The wait counts from the server's clock reading, before the reply travelled back:
            # sleeping it in full after the reply errs late, which is the safe side.
            await asyncio.sleep(slot.wait_s)
        await self.fence(deadline)
        return time.monotonic() - started

    async def book(self, budget_s: float = math.inf) -> Slot:
        """Book the next slot. Raises :class:`RateLimitTimeout`, booking nothing, when it is
        more than ``budget_s`` away."""
        reserved, wait_us, passed = await self._reserve(
            keys=self._keys,
            args=[
                self._interval_us,
                -1 if math.isinf(budget_s) else int(budget_s * 1_000_000),
                self._window_us,
                self._window_calls,
            ],
        )
        raise_if_cancelled()
        wait_s = int(wait_us) / 1_000_000
        if not int(reserved):
            raise RateLimitTimeout(wait_s)
        return Slot(wait_s, bool(int(passed)))

    async def fence(self, deadline: float | None = None) -> None:
        """Start now if the window's worth of calls before this one (any replica's) started
        one window ago or more; else wait for that, and record this start."""
        while True:
            wait_us = int(
                await self._start(keys=self._keys, args=[self._window_us, self._window_calls])
            )
            raise_if_cancelled()
            if wait_us <= 0:
                return
            wait_s = wait_us / 1_000_000
            if deadline is not None and time.monotonic() + wait_s > deadline:
                raise RateLimitTimeout(wait_s)
            await asyncio.sleep(wait_s)


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
