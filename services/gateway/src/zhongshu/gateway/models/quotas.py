"""What the caller may still do: its token's and its tenant's rate limits, and the tenant's
daily task quota."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RateLimit(BaseModel):
    limit: int = Field(description="requests per window")
    window_s: float
    remaining: int
    reset_s: int = Field(description="seconds until the window is whole again")


class DailyTasks(BaseModel):
    limit: int | None = Field(description="tasks per UTC day; null = no limit")
    used: int
    remaining: int | None
    resets_at: datetime


class Quotas(BaseModel):
    tenant: str
    token: RateLimit = Field(description="this token's requests")
    tenant_rate: RateLimit = Field(description="all the tenant's tokens together")
    daily_tasks: DailyTasks
