"""The hot tier: task statuses in Redis (keys and shape in ``contracts.hotcache``), refreshed from
the warm rows the projector just wrote.

The agent writes the same keys as a task moves, so a write here must never undo one of its: a
Lua script replaces a status only when the stored one is not terminal (and not newer), or when
the new one is terminal and newer. A key expires ``ttl`` seconds after the status's own
``updated_at``, not after the write, so a replay of old events neither resurrects statuses that
had expired nor extends the ones still there."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from zhongshu.contracts.hotcache import (
    HOT_TTL_S,
    INDEX_MAX,
    TaskStatus,
    task_index_key,
    task_status_key,
)

log = logging.getLogger("zhongshu.projector.hot")

# KEYS: status key, tenant index. ARGV: status JSON, its state, its updated_at, TTL (s), task id,
# index size. Returns 1 when written, 0 when the stored status wins.
_PUT_STATUS = """
local function terminal(s) return s == 'completed' or s == 'failed' or s == 'cancelled' end
local new_at = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, doc = pcall(cjson.decode, stored)
  if ok and type(doc) == 'table' then
    local at = tonumber(doc['updated_at']) or 0
    if terminal(doc['status']) then
      if not (terminal(ARGV[2]) and new_at > at) then return 0 end
    elseif (not terminal(ARGV[2])) and new_at < at then
      return 0
    end
  end
end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], 'GT', new_at, ARGV[5])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[6]) + 1))
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
"""

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class HotStatus:
    """A task status to publish in the hot tier for ``tenant``."""

    tenant: str
    status: TaskStatus


class HotTier:
    """Writes task statuses with the non-regression script; one pipeline per batch."""

    def __init__(
        self, redis: Redis, *, ttl_s: int = HOT_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._clock = clock
        self._script = redis.register_script(_PUT_STATUS)

    def remaining_ttl(self, updated_at: float) -> int:
        """Seconds the status has left in the hot tier (<= 0: it has aged out); never more than
        the TTL, even for a publisher whose clock runs ahead."""
        return min(self._ttl_s, math.ceil(self._ttl_s - (self._clock() - updated_at)))

    async def put(self, statuses: Iterable[HotStatus]) -> int:
        """Write the newest status of each task; returns how many the script accepted."""
        latest: dict[tuple[str, str], HotStatus] = {}
        for item in statuses:
            latest[(item.tenant, item.status.task_id)] = item
        calls = [
            (item, ttl)
            for item in latest.values()
            if (ttl := self.remaining_ttl(item.status.updated_at)) > 0
        ]
        if not calls:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for item, ttl in calls:
                status = item.status
                await self._script(
                    keys=[
                        task_status_key(item.tenant, status.task_id),
                        task_index_key(item.tenant),
                    ],
                    args=[
                        _encoder.encode(status),
                        status.status,
                        repr(status.updated_at),
                        ttl,
                        status.task_id,
                        INDEX_MAX,
                    ],
                    client=pipe,
                )
            results = await pipe.execute()
        return sum(1 for r in results if r == 1)
