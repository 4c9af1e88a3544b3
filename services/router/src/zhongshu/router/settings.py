"""The router's settings: the runtime's, plus Redis (rate limits, task cache, department
look-ups), its rules, and the platform base URLs for contact look-ups (``PlatformURLs``: tests
point them at fakes, like the notifier's)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zhongshu.platforms.settings import PlatformURLs
from zhongshu.runtime.settings import ServiceSettings


class RouterSettings(ServiceSettings, PlatformURLs):
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
    router_departments_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="how long a user's departments are remembered (a move takes this long)",
    )
    router_departments_negative_ttl_s: float = Field(
        default=300.0,
        gt=0,
        description="how long 'the platform does not know this user' is remembered",
    )
    # The handler runs one batch at a time: a slow platform stalls the router, so keep it short.
    router_departments_timeout_s: float = Field(
        default=3.0, gt=0, description="a contact look-up's whole HTTP exchange"
    )
