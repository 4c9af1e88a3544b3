"""Cluster-wide flow control in Redis, shared by every gateway replica: a GCRA rate limit per API
token and per tenant (checked and charged together in one atomic script), and a daily count of
the tasks each tenant creates. Times come from the Redis server's clock, so replicas with
skewed clocks agree."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from zhongshu.runtime.hubconfig import Rate

KEY_PREFIX = "zhongshu:api"

# KEYS: 1 token TAT, 2 tenant TAT
# ARGV: 1/2 token interval/period µs, 3/4 tenant interval/period µs, 5 cost (0 = only look),
#       6 now µs ("" = the Redis server's clock)
# Returns {allowed, retry_us, token_remaining, token_reset_us, tenant_remaining, tenant_reset_us}
# (Microseconds, so rates above 1000/s keep their precision; Lua's doubles hold them exactly.)
GCRA_SCRIPT = """
local now
if ARGV[6] ~= '' then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[5])
local function look(key, interval, period)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  return tat, tat + interval * cost
end
local function left(tat, interval, period)
  return math.floor((period - (tat - now)) / interval)
end
local t_int, t_per = tonumber(ARGV[1]), tonumber(ARGV[2])
local n_int, n_per = tonumber(ARGV[3]), tonumber(ARGV[4])
local t_tat, t_new = look(KEYS[1], t_int, t_per)
local n_tat, n_new = look(KEYS[2], n_int, n_per)
local t_allow, n_allow = t_new - t_per, n_new - n_per
if t_allow > now or n_allow > now then
  -- Refused: nothing is charged; report each limit as it stands.
  local retry = math.max(t_allow - now, n_allow - now)
  return {0, retry, left(t_tat, t_int, t_per), t_tat - now, left(n_tat, n_int, n_per),
          n_tat - now}
end
if cost > 0 then
  redis.call('SET', KEYS[1], t_new, 'PX', math.max(math.ceil((t_new - now) / 1000), 1))
  redis.call('SET', KEYS[2], n_new, 'PX', math.max(math.ceil((n_new - now) / 1000), 1))
end
return {1, 0, left(t_new, t_int, t_per), t_new - now, left(n_new, n_int, n_per), n_new - now}
"""

# KEYS: 1 the day's counter. ARGV: 1 limit (0 = none), 2 TTL s, 3 cost (negative = refund)
# Returns {allowed, used}
QUOTA_SCRIPT = """
local limit, cost = tonumber(ARGV[1]), tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if cost > 0 and limit > 0 and used + cost > limit then return {0, used} end
if cost ~= 0 then
  used = redis.call('INCRBY', KEYS[1], cost)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return {1, used}
"""


@dataclass(frozen=True)
class Window:
    """One limit's state after a request: what remains of it and when it is whole again."""

    limit: int
    period_s: float
    remaining: int
    reset_ms: int


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    retry_after_ms: int
    token: Window
    tenant: Window

    @property
    def closest(self) -> Window:
        """The limit nearest exhaustion: the one the `RateLimit-*` headers describe."""
        return min((self.token, self.tenant), key=lambda w: (w.remaining, -w.reset_ms))


def gcra_params(rate: Rate) -> tuple[int, int]:
    """(emission interval, period) in µs: `count` requests at once from rest, then one per
    `period/count`."""
    period_us = round(rate.period_s * 1_000_000)
    return max(1, period_us // rate.count), period_us


class RedisRateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._gcra = redis.register_script(GCRA_SCRIPT)
        self._quota = redis.register_script(QUOTA_SCRIPT)

    async def charge(
        self,
        *,
        tenant: str,
        token_id: str,
        per_token: Rate,
        per_tenant: Rate,
        cost: int = 1,
        now_us: int | None = None,
    ) -> RateVerdict:
        """Charge one request to both limits, or neither when either is exhausted; ``cost=0``
        only looks."""
        t_interval, t_period = gcra_params(per_token)
        n_interval, n_period = gcra_params(per_tenant)
        base = f"{KEY_PREFIX}:{{{tenant}}}"  # one hash slot per tenant in Redis Cluster
        result = await self._gcra(
            keys=[f"{base}:rate:token:{token_id}", f"{base}:rate:tenant"],
            args=[
                t_interval,
                t_period,
                n_interval,
                n_period,
                cost,
                "" if now_us is None else now_us,
            ],
        )
        allowed, retry, t_rem, t_reset, n_rem, n_reset = (int(v) for v in result)
        return RateVerdict(
            allowed=bool(allowed),
            retry_after_ms=_ms(retry),
            token=Window(
                per_token.count, per_token.period_s, _clip(t_rem, per_token), _ms(t_reset)
            ),
            tenant=Window(
                per_tenant.count, per_tenant.period_s, _clip(n_rem, per_tenant), _ms(n_reset)
            ),
        )

    async def count_task(
        self, *, tenant: str, day: str, limit: int, cost: int = 1
    ) -> tuple[bool, int]:
        """Add ``cost`` tasks to the tenant's count for ``day`` unless that passes ``limit``
        (0 = no limit); a negative cost gives back. Returns (allowed, used)."""
        result = await self._quota(
            keys=[f"{KEY_PREFIX}:{{{tenant}}}:tasks:{day}"],
            args=[limit, 2 * 24 * 3600, cost],
        )
        allowed, used = (int(v) for v in result)
        return bool(allowed), used


def _ms(us: int) -> int:
    return -(-us // 1000)


def _clip(remaining: int, rate: Rate) -> int:
    return min(max(remaining, 0), rate.count)
