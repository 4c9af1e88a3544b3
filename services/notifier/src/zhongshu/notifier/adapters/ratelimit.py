"""A cluster-wide sliding-window limiter in Redis: at most ``count`` calls per ``window_s`` for
one key (a DingTalk robot, a Feishu chat, one API of one Feishu app), shared by every replica.
Callers wait for a slot instead of failing, so the platform's own limit (and DingTalk's
10-minute block) is never hit.

The platform counts a call when it arrives, which is later than when we took the slot. So a
slot is first held as "in flight" (scored in the future, so it always counts) and, once the
answer is back, re-scored with the time of the answer, which is never earlier than the
arrival: our window then always covers the platform's. That is the margin: in time, not in
count, so a bucket may hold the platform's own number and still never be refused; what it
costs is the time from taking a slot to the answer, once per window.

One call usually needs several buckets at once (the chat's, and the app's for that API each
second and each minute): :meth:`SlidingWindowLimiter.take_all` takes them all or none, in one
script. Holding one bucket's slot while waiting for another's would waste it, and a burst into
one chat would hold the whole app's quota while it waits for the chat. The keys go to one
script, so they must live on one Redis (no cluster hash slots), as the notifier's does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from zhongshu.runtime.cancellation import raise_if_cancelled


@dataclass(frozen=True)
class Limit:
    """At most ``count`` calls per ``window_s`` for ``key``. One take uses ``weight`` of them:
    an operation that makes that many calls on the bucket (closing a streamed card writes its
    last text and its settings)."""

    key: str
    count: int
    window_s: float
    weight: int = 1


# The server's clock decides, so replicas with skewed clocks still agree. ARGV: member, hold,
# then (count, window, weight) per key. Every bucket is checked before any is taken: all or
# none. Returns 0 when the slots were taken, else the milliseconds until the fullest bucket has
# room (the entry whose leaving makes room for ``weight`` more).
_TAKE = """
local member, hold_us = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait_us = 0
for i, key in ipairs(KEYS) do
  local count, window_us, weight =
    tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
  local over = redis.call('ZCARD', key) + weight - count
  if over > 0 then
    local leaving = redis.call('ZRANGE', key, over - 1, over - 1, 'WITHSCORES')
    wait_us = math.max(wait_us, tonumber(leaving[2]) + window_us - now)
  end
end
if wait_us > 0 then
  return math.max(1, math.ceil(wait_us / 1000))
end
for i, key in ipairs(KEYS) do
  local window_us, weight = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  for j = 1, weight do
    redis.call('ZADD', key, now + hold_us, member .. ':' .. j)
  end
  redis.call('PEXPIRE', key, math.ceil((window_us + hold_us) / 1000) + 1000)
end
return 0
"""

# ARGV: member, then the weight per key. XX: a slot that already left the window stays gone.
_CONFIRM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  for j = 1, tonumber(ARGV[i + 1]) do
    redis.call('ZADD', key, 'XX', now, ARGV[1] .. ':' .. j)
  end
end
return 0
"""

Confirm = Callable[[], Awaitable[None]]
# While in-flight slots hold the window, poll rather than sleep for their whole hold.
MAX_POLL_S = 0.25


async def _nothing_to_confirm() -> None:
    return None


def merged(limits: Iterable[Limit]) -> tuple[Limit, ...]:
    """One entry per key (a key named twice counts both weights against the lower count), so the
    script's check-then-take holds for every bucket."""
    by_key: dict[str, Limit] = {}
    for limit in limits:
        seen = by_key.get(limit.key)
        if seen is not None:
            limit = Limit(
                limit.key,
                min(seen.count, limit.count),
                max(seen.window_s, limit.window_s),
                seen.weight + limit.weight,
            )
        if limit.weight > limit.count:
            raise ValueError(f"{limit.key}: a take of {limit.weight} never fits in {limit.count}")
        by_key[limit.key] = limit
    return tuple(by_key.values())


class SlidingWindowLimiter:
    def __init__(
        self, redis: Redis, *, hold_s: float = 30.0, prefix: str = "zhongshu:notifier:rate:"
    ) -> None:
        self._prefix = prefix
        self._hold_us = int(hold_s * 1_000_000)
        self._take = redis.register_script(_TAKE)
        self._confirm = redis.register_script(_CONFIRM)

    async def try_take_all(self, limits: Iterable[Limit]) -> tuple[float, Confirm]:
        """Take a slot in every bucket now (returns 0.0 and the confirmation to call once the
        platform answered) or say how many seconds until all may have room."""
        buckets = merged(limits)
        if not buckets:
            return 0.0, _nothing_to_confirm
        keys = [self._prefix + b.key for b in buckets]
        member = uuid.uuid4().hex
        args: list[str | int] = [member, self._hold_us]
        for b in buckets:
            args += [b.count, int(b.window_s * 1_000_000), b.weight]
        wait_ms = await self._take(keys=keys, args=args)
        weights: list[str | int] = [member, *(b.weight for b in buckets)]

        async def confirm() -> None:
            await self._confirm(keys=keys, args=weights)

        return float(wait_ms) / 1000, confirm

    async def take_all(self, limits: Iterable[Limit]) -> tuple[float, Confirm]:
        """Wait until every bucket has room and take a slot in each; returns the seconds
        waited and the confirmation."""
        buckets = merged(limits)
        waited = 0.0
        while True:
            wait, confirm = await self.try_take_all(buckets)
            raise_if_cancelled()
            if wait <= 0:
                return waited, confirm
            # A small extra keeps replicas that wake together from all retrying in one instant.
            pause = min(wait, MAX_POLL_S) + 0.005
            await asyncio.sleep(pause)
            waited += pause

    async def try_take(self, key: str, limit: int, window_s: float) -> tuple[float, Confirm]:
        return await self.try_take_all((Limit(key, limit, window_s),))

    async def take(self, key: str, limit: int, window_s: float) -> tuple[float, Confirm]:
        """One bucket: :meth:`take_all` of one."""
        return await self.take_all((Limit(key, limit, window_s),))
