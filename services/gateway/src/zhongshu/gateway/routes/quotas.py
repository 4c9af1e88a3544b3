"""`/api/v1/quotas`: the caller's limits and what is left, without spending any."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request

from zhongshu.gateway import problems
from zhongshu.gateway.adapters.ratelimit import RateVerdict, Window
from zhongshu.gateway.auth import Caller
from zhongshu.gateway.context import GatewayDep
from zhongshu.gateway.models.quotas import DailyTasks, Quotas, RateLimit
from zhongshu.gateway.quotas import VERDICT_STATE, rate_observed

router = APIRouter(prefix="/api/v1/quotas", tags=["quotas"])


def limit_view(window: Window) -> RateLimit:
    return RateLimit(
        limit=window.limit,
        window_s=window.period_s,
        remaining=window.remaining,
        reset_s=max(0, math.ceil(window.reset_ms / 1000)),
    )


@router.get(
    "",
    response_model=Quotas,
    summary="Show the caller's limits",
    dependencies=[Depends(rate_observed)],
    responses=problems.responses(),
)
async def get_quotas(
    request: Request,
    principal: Caller,
    gw: GatewayDep,
) -> Quotas:
    """Any valid token may ask; asking spends nothing."""
    verdict: RateVerdict = getattr(request.state, VERDICT_STATE)
    daily = await gw.flow.daily(principal.tenant)
    return Quotas(
        tenant=principal.tenant,
        token=limit_view(verdict.token),
        tenant_rate=limit_view(verdict.tenant),
        daily_tasks=DailyTasks(
            limit=daily.limit or None,
            used=daily.used,
            remaining=daily.remaining,
            resets_at=daily.resets_at,
        ),
    )
