"""Per streamed reply, in Redis: the newest chunk applied, when, the card's sequence counter
and whose turn it is. Chunks may be handled out of order and concurrently, by any replica; this
keeps card updates in chunk order, at most one per ``min_interval`` (the final always passes),
and one update of a card in flight at a time.

One at a time is what makes the sequence numbers arrive in order: CardKit refuses an update
whose ``sequence`` is not above the last one it applied (code 300317), and two updates sent
concurrently may arrive in either order. A platform without such a sequence (DingTalk AI
cards) would even apply an older update that arrives late over a newer one, the final text
included. So a chunk claims its sequence and the card's turn in one step, sends, and ends its
turn; a non-final chunk that finds the turn taken is skipped (a newer one will follow), the
final one asks again until the turn is free. A holder that died frees the turn after
``turn_s``."""

from __future__ import annotations

from redis.asyncio import Redis

_CLAIM = """
local key, idx, final, interval, ttl, turn_ms, take =
  KEYS[1], tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), ARGV[6] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', key, 'index', 'at', 'turn_until')
local last = tonumber(state[1] or '-1')
local at = tonumber(state[2] or '0')
local busy = take and tonumber(state[3] or '0') > now
if final then
  if idx < last then return 0 end
  if busy then return -1 end
else
  if idx <= last or now - at < interval or busy then return 0 end
end
local seq = redis.call('HINCRBY', key, 'seq', final and 2 or 1)
redis.call('HSET', key, 'index', idx, 'at', now)
if take then redis.call('HSET', key, 'turn', seq, 'turn_until', now + turn_ms) end
redis.call('PEXPIRE', key, ttl)
return seq
"""

_END_TURN = """
if redis.call('HGET', KEYS[1], 'turn') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'turn_until', 0)
  return 1
end
return 0
"""

TTL_MS = 7 * 24 * 3600 * 1000
BUSY = -1
"""What :meth:`StreamState.claim` answers a final chunk while another update is in flight."""


class StreamState:
    def __init__(self, redis: Redis, *, prefix: str = "zhongshu:notifier:stream:") -> None:
        self._prefix = prefix
        self._claim = redis.register_script(_CLAIM)
        self._end_turn = redis.register_script(_END_TURN)

    async def claim(
        self,
        stream_key: str,
        chunk_index: int,
        final: bool,
        min_interval_s: float,
        *,
        turn_s: float,
        take_turn: bool = True,
    ) -> int:
        """The sequence to use for this chunk's update, with the card's turn taken for it
        until :meth:`end_turn` or ``turn_s`` (for a final chunk: the content update uses
        ``seq - 1`` and closing the stream ``seq``); 0 to skip it (older than what was
        applied, too soon after the last update, or, not final, another update in flight);
        :data:`BUSY` when a final chunk must wait for the update in flight.

        ``take_turn=False`` records the chunk as applied without sending anything (its text
        is on the card already: it created the card)."""
        return int(
            await self._claim(
                keys=[self._prefix + stream_key],
                args=[
                    chunk_index,
                    "1" if final else "0",
                    int(min_interval_s * 1000),
                    TTL_MS,
                    int(turn_s * 1000),
                    "1" if take_turn else "0",
                ],
            )
        )

    async def end_turn(self, stream_key: str, seq: int) -> None:
        await self._end_turn(keys=[self._prefix + stream_key], args=[str(seq)])
