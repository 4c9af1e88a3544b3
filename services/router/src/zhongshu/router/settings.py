"""The router's settings: the runtime's, plus Redis (rate limits, task cache) and its rules."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zhongshu.runtime.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    redis_url: str = Field(description="Redis for rate limits and the task-status cache")
    router_rules: Path | None = Field(
        default=None, description="YAML file overriding the default routing rules"
    )
    router_memo_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="how long a rate-limit verdict is remembered for a redelivered event",
    )
    router_concurrency: int = Field(default=16, gt=0, description="messages handled at once")
