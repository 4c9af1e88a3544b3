"""The archiver's settings: the runtime's, plus where the archive lives, how months are cut,
how big a chunk may grow before it is written, and when a lagging archive raises an alert."""

from __future__ import annotations

import json
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from zhongshu.archiver.layout import DEFAULT_STORE_URL
from zhongshu.runtime.settings import ServiceSettings


class ArchiverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    object_store_url: str = Field(
        default=DEFAULT_STORE_URL,
        description="Archive root: file://PATH (relative paths resolve against the working "
        "directory), s3://bucket/prefix?endpoint=...&region=..., gs://, az://; credentials "
        "from the provider's usual environment variables (AWS_ACCESS_KEY_ID ...)",
    )
    archive_tz: str = Field(
        default="UTC", description="IANA time zone in which an event's month is decided"
    )
    archive_streams: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Streams to archive (JSON list or comma-separated); empty = every stream "
        "declared in contracts",
    )
    archive_drain: bool = Field(
        default=True,
        description="false = only watch the lag (a monitor replica); nothing is written",
    )
    archive_fetch_batch: int = Field(default=5_000, gt=0, le=100_000)
    archive_fetch_expires_s: float = Field(
        default=1.0,
        gt=0,
        description="while caught up, how long the drain waits before it pulls again (what "
        "arrived meanwhile comes in one burst); events reach the archive this much later",
    )
    # Two chunks per stream may be in memory (one collected, one being written): the byte
    # bound keeps a first run over a dozen backlogged streams within a few hundred MB.
    archive_chunk_max_events: int = Field(default=20_000, gt=0)
    archive_chunk_max_bytes: int = Field(default=16 * 1024**2, gt=0)
    archive_chunk_max_age_s: float = Field(
        default=600.0,
        gt=0,
        description="a chunk is written at the latest this long after its first event (a quiet "
        "stream gets one object per this period: its manifest lists each)",
    )
    archive_zstd_level: int = Field(default=3, ge=1, le=22)
    archive_lag_check_interval_s: float = Field(default=30.0, gt=0)
    archive_lag_warning_ratio: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="warn when the oldest unarchived event has used this share of max_age",
    )
    archive_lag_error_ratio: float = Field(default=0.8, gt=0, lt=1)
    archive_alert_window_s: float = Field(
        default=3_600.0, gt=0, description="one lag alert per level per stream per window"
    )
    archive_crash_at: str | None = Field(
        default=None,
        description="testing only: SIGKILL the process at this commit step "
        "(after-intent, after-objects, after-manifests) of the Nth chunk, e.g. after-objects:2",
    )

    @field_validator("archive_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("archive_streams", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _ordered_levels(self) -> ArchiverSettings:
        if self.archive_lag_warning_ratio >= self.archive_lag_error_ratio:
            raise ValueError("archive_lag_warning_ratio must be below archive_lag_error_ratio")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.archive_tz)
