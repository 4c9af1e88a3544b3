"""Folding repeats of one alert in Redis: the first copy in a window is sent at once, the first
repeat waits for the window to end and sends one summary with the count, later repeats are only
counted. Every step is keyed by the alert's envelope id, so a redelivered alert keeps its role
and is never counted twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

# KEYS[1] prefix, ARGV: fold key, envelope id, window ms. Returns {role, window id, ms left}.
_JOIN = """
local p, fold, id, window = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local memo = redis.call('GET', p .. 'role:' .. id)
local first_key = p .. 'first:' .. fold
if memo then
  local role, wid = string.match(memo, '^(%a+)|(.*)$')
  local left = 0
  if redis.call('GET', first_key) == wid then left = redis.call('PTTL', first_key) end
  return {role, wid, left}
end
local role, wid, left
local first = redis.call('GET', first_key)
if not first then
  redis.call('SET', first_key, id, 'PX', window)
  role, wid, left = 'first', id, window
else
  wid = first
  left = redis.call('PTTL', first_key)
  redis.call('SADD', p .. 'rep:' .. fold .. '|' .. wid, id)
  redis.call('PEXPIRE', p .. 'rep:' .. fold .. '|' .. wid, window * 3)
  local ok = redis.call('SET', p .. 'closer:' .. fold .. '|' .. wid, id, 'NX', 'PX', window * 3)
  if ok then role = 'closer' else role = 'repeat' end
end
redis.call('SET', p .. 'role:' .. id, role .. '|' .. wid, 'PX', window * 3)
return {role, wid, left}
"""

# KEYS[1] prefix, ARGV: fold key, window id, window ms. The count is frozen on first call.
_CLOSE = """
local p, fold, wid, window = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local sum_key = p .. 'sum:' .. fold .. '|' .. wid
local n = redis.call('GET', sum_key)
if n then return tonumber(n) end
n = redis.call('SCARD', p .. 'rep:' .. fold .. '|' .. wid)
redis.call('SET', sum_key, n, 'PX', window * 3)
return n
"""

Role = Literal["first", "closer", "repeat"]


@dataclass(frozen=True)
class Joined:
    role: Role
    window_id: str
    left_s: float
    """Time until the window closes (for the closer, how long to wait)."""


class AlertWindow:
    def __init__(self, redis: Redis, *, prefix: str = "zhongshu:notifier:alert:") -> None:
        self._prefix = prefix
        self._join = redis.register_script(_JOIN)
        self._close = redis.register_script(_CLOSE)

    async def join(self, fold: str, alert_id: str, window_s: float) -> Joined:
        role, window_id, left_ms = await self._join(
            keys=[self._prefix], args=[fold, alert_id, int(window_s * 1000)]
        )
        role_text = role.decode() if isinstance(role, bytes) else str(role)
        wid = window_id.decode() if isinstance(window_id, bytes) else str(window_id)
        assert role_text in ("first", "closer", "repeat")
        return Joined(role_text, wid, max(0, int(left_ms)) / 1000)  # type: ignore[arg-type]

    async def close(self, fold: str, window_id: str, window_s: float) -> int:
        """How many repeats the window saw (the same answer on every call)."""
        return int(
            await self._close(keys=[self._prefix], args=[fold, window_id, int(window_s * 1000)])
        )
