"""Cluster-wide rate limits in Redis: GCRA per user and per chat in one atomic Lua script,
shared by every router replica. The decision for an inbound event is remembered (by its id)
so a redelivered event gets the same verdict instead of being counted twice."""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from zhongshu.router.domain import LimitVerdict, gcra_params
from zhongshu.runtime.hubconfig import Rate

KEY_PREFIX = "zhongshu:rl"

# KEYS: 1 seen (decision memo), 2 user TAT, 3 user notice, 4 chat TAT, 5 chat notice
# ARGV: 1 memo TTL ms, 2/3 user interval/period ms, 4/5 chat interval/period ms (0 = no limit),
#       6 now ms ("" = the Redis server clock, shared by every replica)
# Returns {allowed, retry_after_ms, scope (0 none, 1 user, 2 chat), notify}.
GCRA_SCRIPT = """
local seen = redis.call('GET', KEYS[1])
if seen then
  local a, r, s, n = string.match(seen, '^(%d+),(%d+),(%d+),(%d+)$')
  return {tonumber(a), tonumber(r), tonumber(s), tonumber(n)}
end
local now
if ARGV[6] ~= '' then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function check(key, interval, period)
  if interval <= 0 then return true, 0, 0 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  if allow_at > now then return false, allow_at - now, 0 end
  return true, 0, new_tat
end
local u_ok, u_retry, u_tat = check(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
local c_ok, c_retry, c_tat = check(KEYS[4], tonumber(ARGV[4]), tonumber(ARGV[5]))
local allowed, retry, scope, notify = 1, 0, 0, 0
if u_ok and c_ok then
  if u_tat > 0 then redis.call('SET', KEYS[2], u_tat, 'PX', u_tat - now) end
  if c_tat > 0 then redis.call('SET', KEYS[4], c_tat, 'PX', c_tat - now) end
else
  allowed = 0
  local notice
  if (not u_ok) and u_retry >= c_retry then
    retry, scope, notice = u_retry, 1, KEYS[3]
  else
    retry, scope, notice = c_retry, 2, KEYS[5]
  end
  if redis.call('SET', notice, '1', 'NX', 'PX', math.max(retry, 1)) then notify = 1 end
end
redis.call('SET', KEYS[1], allowed .. ',' .. retry .. ',' .. scope .. ',' .. notify,
           'PX', tonumber(ARGV[1]))
return {allowed, retry, scope, notify}
"""

_SCOPES = {0: "", 1: "user", 2: "chat"}


class RateLimiter(Protocol):
    async def check(
        self,
        *,
        app: str,
        inbound_id: str,
        user: str,
        chat: str,
        per_user: Rate | None,
        per_chat: Rate | None,
    ) -> LimitVerdict: ...


def keys(app: str, inbound_id: str, user: str, chat: str) -> list[str]:
    """The script's keys; ``{app}`` is a hash tag, so in Redis Cluster they share a slot."""
    base = f"{KEY_PREFIX}:{{{app}}}"
    return [
        f"{base}:seen:{inbound_id}",
        f"{base}:user:{user}",
        f"{base}:user:{user}:notice",
        f"{base}:chat:{chat}",
        f"{base}:chat:{chat}:notice",
    ]


class RedisRateLimiter:
    def __init__(self, redis: Redis, *, memo_ttl_s: float = 24 * 3600) -> None:
        self._script = redis.register_script(GCRA_SCRIPT)
        self._memo_ttl_ms = round(memo_ttl_s * 1000)

    async def check(
        self,
        *,
        app: str,
        inbound_id: str,
        user: str,
        chat: str,
        per_user: Rate | None,
        per_chat: Rate | None,
        now_ms: int | None = None,
    ) -> LimitVerdict:
        if per_user is None and per_chat is None:
            return LimitVerdict(True)
        user_interval, user_period = gcra_params(per_user) if per_user else (0, 0)
        chat_interval, chat_period = gcra_params(per_chat) if per_chat else (0, 0)
        result = await self._script(
            keys=keys(app, inbound_id, user, chat),
            args=[
                self._memo_ttl_ms,
                user_interval,
                user_period,
                chat_interval,
                chat_period,
                "" if now_ms is None else now_ms,
            ],
        )
        allowed, retry_ms, scope, notify = (int(v) for v in result)
        return LimitVerdict(bool(allowed), retry_ms, _SCOPES[scope], bool(notify))
