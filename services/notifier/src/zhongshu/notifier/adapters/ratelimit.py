"""A cluster-wide sliding-window limiter in Redis: at most ``limit`` sends per ``window_s`` for
one key (a DingTalk robot, a Feishu chat), shared by every replica. Callers wait for a slot
instead of failing, so the platform's own limit (and DingTalk's 10-minute block) is never hit.

The platform counts a send when it arrives, which is later than when we took the slot. So a
slot is first held as "in flight" (scored in the future, so it always counts) and, once the
answer is back, re-scored with the time of the answer, which is never earlier than the
arrival: our window then always covers the platform's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from zhongshu.runtime.cancellation import raise_if_cancelled

# The server's clock decides, so replicas with skewed clocks still agree. Returns 0 when the
# slot was taken, else the milliseconds until the oldest entry leaves the window.
_TAKE = """
local key, limit, window_us, member, hold_us =
  KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + hold_us, member)
  redis.call('PEXPIRE', key, math.ceil((window_us + hold_us) / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, math.ceil((tonumber(oldest[2]) + window_us - now) / 1000))
"""

_CONFIRM = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
return 0
"""

Confirm = Callable[[], Awaitable[None]]
# While in-flight slots hold the window, poll rather than sleep for their whole hold.
MAX_POLL_S = 0.25


class SlidingWindowLimiter:
    def __init__(
        self, redis: Redis, *, hold_s: float = 30.0, prefix: str = "zhongshu:notifier:rate:"
    ) -> None:
        self._prefix = prefix
        self._hold_us = int(hold_s * 1_000_000)
        self._take = redis.register_script(_TAKE)
        self._confirm = redis.register_script(_CONFIRM)

    async def try_take(self, key: str, limit: int, window_s: float) -> tuple[float, Confirm]:
        """Take a slot now (returns 0.0 and the confirmation to call once the platform
        answered) or say how many seconds until one may be free."""
        member = uuid.uuid4().hex
        wait_ms = await self._take(
            keys=[self._prefix + key],
            args=[limit, int(window_s * 1_000_000), member, self._hold_us],
        )

        async def confirm() -> None:
            await self._confirm(keys=[self._prefix + key], args=[member])

        return float(wait_ms) / 1000, confirm

    async def take(self, key: str, limit: int, window_s: float) -> tuple[float, Confirm]:
        """Wait until a slot is free and take it; returns the seconds waited and the
        confirmation."""
        waited = 0.0
        while True:
            wait, confirm = await self.try_take(key, limit, window_s)
            raise_if_cancelled()
            if wait <= 0:
                return waited, confirm
            # A small extra keeps replicas that wake together from all retrying in one instant.
            pause = min(wait, MAX_POLL_S) + 0.005
            await asyncio.sleep(pause)
            waited += pause
