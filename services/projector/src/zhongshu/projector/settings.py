"""The projector's settings: the runtime's, the two stores it writes, and how long each tier keeps
what it holds. Everything comes from ``ZHONGSHU_*`` variables; the stores have no default, so a
projector that would write nowhere does not start."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zhongshu.contracts.hotcache import HOT_TTL_S
from zhongshu.runtime.settings import ServiceSettings


class ProjectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    postgres_url: str = Field(description="PostgreSQL holding the warm tier (read models)")
    redis_url: str = Field(description="Redis holding the hot tier (task statuses)")
    hot_ttl_s: int = Field(
        default=HOT_TTL_S,
        gt=0,
        description="how long a task status stays in Redis after its last change (7 days)",
    )
    warm_retention_months: int = Field(
        default=0,
        ge=0,
        description="delete finished rows older than this many whole months (UTC); 0 = keep",
    )
    warm_retention_interval_s: float = Field(
        default=3600.0, gt=0, description="how often the warm-tier pruning runs"
    )
    warm_retention_batch: int = Field(
        default=1000, gt=0, description="rows deleted per statement while pruning"
    )
    projector_pool_size: int = Field(
        default=4, ge=2, description="PostgreSQL connections (one per stream writer at most)"
    )
    projector_reconcile_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="how often schedules purged from SCHEDULES are marked deleted",
    )
    projector_lag_interval_s: float = Field(
        default=5.0, gt=0, description="how often the lag gauges are refreshed"
    )
    projector_batch_window_s: float = Field(
        default=0.1,
        ge=0,
        le=5.0,
        description="how long a stream's writer lets a batch gather after its first message: "
        "a transaction per batch, not per message (a read model trails its stream by as much)",
    )
