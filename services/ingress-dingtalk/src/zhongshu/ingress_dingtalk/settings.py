"""ingress-dingtalk's settings: the runtime's, the DingTalk base URLs (``PlatformURLs``, so tests
and the sandbox point them at fakes) and the Stream-mode timings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zhongshu.platforms.settings import PlatformURLs
from zhongshu.runtime.settings import ServiceSettings


class DingTalkIngressSettings(ServiceSettings, PlatformURLs):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    config: Path | None = Field(
        default=None,
        description="zhongshu.yaml with the apps (ZHONGSHU_CONFIG; default ./config/zhongshu.yaml)",
    )
    callback_max_skew_s: float = Field(
        default=3600.0, gt=0, description="how far a callback's timestamp may be from now"
    )
    stream_lease_renew_s: float = Field(
        default=5.0, gt=0, description="how often the Stream connection's holder renews its lease"
    )
    stream_lease_retry_s: float = Field(
        default=3.0, gt=0, description="how often a standby replica tries to take the lease"
    )
    stream_backoff_initial_s: float = Field(default=1.0, gt=0)
    stream_backoff_max_s: float = Field(default=30.0, gt=0)
