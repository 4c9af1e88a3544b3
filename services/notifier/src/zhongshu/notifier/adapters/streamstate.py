"""Per streamed reply, in Redis: the newest chunk applied, when, and the card's sequence
counter. Chunks may be handled out of order and concurrently; this keeps card updates in
chunk order, at most one per ``min_interval`` (the final always passes), with a strictly
increasing ``sequence`` as CardKit requires."""

from __future__ import annotations

from redis.asyncio import Redis

_CLAIM = """
local key, idx, final, interval, ttl =
  KEYS[1], tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', key, 'index') or '-1')
local at = tonumber(redis.call('HGET', key, 'at') or '0')
if final then
  if idx < last then return 0 end
else
  if idx <= last or now - at < interval then return 0 end
end
redis.call('HSET', key, 'index', idx, 'at', now)
local seq = redis.call('HINCRBY', key, 'seq', final and 2 or 1)
redis.call('PEXPIRE', key, ttl)
return seq
"""

TTL_MS = 7 * 24 * 3600 * 1000


class StreamState:
    def __init__(self, redis: Redis, *, prefix: str = "zhongshu:notifier:stream:") -> None:
        self._prefix = prefix
        self._claim = redis.register_script(_CLAIM)

    async def claim(
        self, stream_key: str, chunk_index: int, final: bool, min_interval_s: float
    ) -> int:
        """The sequence to use for this chunk's update (for a final chunk: the content update
        uses ``seq - 1`` and closing the stream ``seq``), or 0 to skip it (older than what was
        applied, or too soon after the last update)."""
        return int(
            await self._claim(
                keys=[self._prefix + stream_key],
                args=[chunk_index, "1" if final else "0", int(min_interval_s * 1000), TTL_MS],
            )
        )
