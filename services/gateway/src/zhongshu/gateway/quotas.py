"""Flow control: every API request is charged to its token's and its tenant's rate limits, and
every task created to the tenant's daily quota. A refusal is a 429 problem with `Retry-After`;
every answer carries the IETF `RateLimit-*` headers of the limit closest to exhaustion, so
well-behaved clients slow down before they are refused.

When Redis cannot be reached the gateway refuses (503) rather than letting traffic through
unmetered: the limits protect the bus and the model budget behind it."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request
from redis.exceptions import RedisError

from zhongshu.gateway.adapters.ratelimit import RateVerdict, RedisRateLimiter, Window
from zhongshu.gateway.auth import Caller, Principal
from zhongshu.gateway.problems import ProblemError
from zhongshu.runtime.hubconfig import Rate

log = logging.getLogger("zhongshu.gateway.quotas")

VERDICT_STATE = "ratelimit"


@dataclass(frozen=True)
class DailyQuota:
    limit: int
    """0 = no limit."""
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        return None if self.limit == 0 else max(self.limit - self.used, 0)


def window_headers(window: Window) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(window.limit),
        "RateLimit-Remaining": str(window.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(window.reset_ms / 1000))),
    }


def verdict_headers(verdict: RateVerdict) -> dict[str, str]:
    token, tenant = verdict.token, verdict.tenant
    return {
        **window_headers(verdict.closest),
        "RateLimit-Policy": (
            f"{token.limit};w={round(token.period_s)}, {tenant.limit};w={round(tenant.period_s)}"
        ),
    }


def next_utc_midnight(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


class FlowControl:
    def __init__(
        self, limiter: RedisRateLimiter, *, per_token: Rate, per_tenant: Rate, daily_tasks: int
    ) -> None:
        self._limiter = limiter
        self.per_token = per_token
        self.per_tenant = per_tenant
        self.daily_tasks = daily_tasks

    async def admit(self, principal: Principal, *, cost: int = 1) -> RateVerdict:
        """Charge a request (``cost=0``: only look); 429 when a limit is exhausted."""
        try:
            verdict = await self._limiter.charge(
                tenant=principal.tenant,
                token_id=principal.token_id,
                per_token=self.per_token,
                per_tenant=self.per_tenant,
                cost=cost,
            )
        except RedisError as exc:
            raise _unavailable(exc) from None
        if not verdict.allowed:
            retry_s = max(1, math.ceil(verdict.retry_after_ms / 1000))
            which = "this token's" if verdict.token.remaining == 0 else "the tenant's"
            raise ProblemError(
                429,
                f"{which} rate limit is exhausted; retry in {retry_s} s",
                kind="rate-limited",
                headers={**verdict_headers(verdict), "Retry-After": str(retry_s)},
            )
        return verdict

    async def take_task(self, tenant: str, *, now: datetime | None = None) -> None:
        """Count one more task today; 429 when the tenant's daily quota is used up."""
        now = now or datetime.now(UTC)
        try:
            allowed, _ = await self._limiter.count_task(
                tenant=tenant, day=now.strftime("%Y%m%d"), limit=self.daily_tasks
            )
        except RedisError as exc:
            raise _unavailable(exc) from None
        if not allowed:
            reset_s = max(1, math.ceil((next_utc_midnight(now) - now).total_seconds()))
            raise ProblemError(
                429,
                f"the tenant's quota of {self.daily_tasks} tasks a day is used up; "
                f"it renews at 00:00 UTC, in {reset_s} s",
                kind="quota-exhausted",
                headers={
                    "Retry-After": str(reset_s),
                    "RateLimit-Limit": str(self.daily_tasks),
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(reset_s),
                },
            )

    async def give_back_task(self, tenant: str, *, now: datetime | None = None) -> None:
        """Undo :meth:`take_task` for a task that was not created after all."""
        now = now or datetime.now(UTC)
        try:
            await self._limiter.count_task(
                tenant=tenant, day=now.strftime("%Y%m%d"), limit=0, cost=-1
            )
        except RedisError:
            log.warning("could not give back a task to %s's daily quota", tenant)

    async def daily(self, tenant: str, *, now: datetime | None = None) -> DailyQuota:
        now = now or datetime.now(UTC)
        try:
            _, used = await self._limiter.count_task(
                tenant=tenant, day=now.strftime("%Y%m%d"), limit=0, cost=0
            )
        except RedisError as exc:
            raise _unavailable(exc) from None
        return DailyQuota(limit=self.daily_tasks, used=used, resets_at=next_utc_midnight(now))


def _unavailable(exc: Exception) -> ProblemError:
    log.warning("rate limits unavailable: %r", exc)
    return ProblemError(
        503,
        "rate limits cannot be checked (Redis is unreachable)",
        kind="unavailable",
        headers={"Retry-After": "5"},
    )


# --- FastAPI dependencies ----------------------------------------------------------------------


async def rate_limited(request: Request, principal: Caller) -> None:
    """Charge this request to the caller's limits (a router-wide dependency)."""
    from zhongshu.gateway.context import gateway  # context imports this module

    setattr(request.state, VERDICT_STATE, await gateway(request).flow.admit(principal))


async def rate_observed(request: Request, principal: Caller) -> None:
    """Look at the caller's limits without charging (for `GET /api/v1/quotas`)."""
    from zhongshu.gateway.context import gateway

    verdict = await gateway(request).flow.admit(principal, cost=0)
    setattr(request.state, VERDICT_STATE, verdict)


def headers_for(state: Mapping[str, object]) -> dict[str, str]:
    """The `RateLimit-*` headers a response carries, from what the dependency recorded."""
    verdict = state.get(VERDICT_STATE)
    return verdict_headers(verdict) if isinstance(verdict, RateVerdict) else {}
