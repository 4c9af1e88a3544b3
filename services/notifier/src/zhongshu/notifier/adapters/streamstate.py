"""Per streamed reply, in Redis: the newest chunk applied, when, and the card's sequence
counter. Chunks may be handled out of order and concurrently; this keeps card updates in
chunk order, at most one per ``min_interval`` (the final always passes), with a strictly
increasing ``sequence`` as CardKit requires.

A platform without such a sequence (DingTalk AI cards) would apply an older update that
arrives late over a newer one, even over the final text; for those, :meth:`take_turn` lets
one update of a card be in flight at a time, and only the newest claimed."""

from __future__ import annotations

from typing import Literal

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

# The turn belongs to the newest claim only; a holder that died frees it after ``ttl``.
_TAKE_TURN = """
local key, seq, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', key, 'seq') ~= seq then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('HGET', key, 'turn_until') or '0') > now then return 0 end
redis.call('HSET', key, 'turn', seq, 'turn_until', now + ttl)
return 1
"""

_END_TURN = """
if redis.call('HGET', KEYS[1], 'turn') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'turn_until', 0)
  return 1
end
return 0
"""

TTL_MS = 7 * 24 * 3600 * 1000
Turn = Literal["go", "busy", "stale"]


class StreamState:
    def __init__(self, redis: Redis, *, prefix: str = "zhongshu:notifier:stream:") -> None:
        self._prefix = prefix
        self._claim = redis.register_script(_CLAIM)
        self._take_turn = redis.register_script(_TAKE_TURN)
        self._end_turn = redis.register_script(_END_TURN)

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

    async def take_turn(self, stream_key: str, seq: int, ttl_s: float) -> Turn:
        """``go``: send the update claimed as ``seq`` now, then :meth:`end_turn`; ``busy``:
        another update of the card is in flight; ``stale``: a newer chunk was claimed since,
        this one must not be sent."""
        answer = int(
            await self._take_turn(
                keys=[self._prefix + stream_key], args=[str(seq), int(ttl_s * 1000)]
            )
        )
        return "go" if answer == 1 else "busy" if answer == 0 else "stale"

    async def end_turn(self, stream_key: str, seq: int) -> None:
        await self._end_turn(keys=[self._prefix + stream_key], args=[str(seq)])
