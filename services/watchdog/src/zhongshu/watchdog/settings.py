"""The watchdog's settings: the runtime's, plus where the hub keeps its data on this host. What it
alerts on, and when, is configuration (`watchdog:` in zhongshu.yaml), read live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from zhongshu.runtime.settings import ServiceSettings


class WatchdogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    watchdog_disks: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("data"), Path("data/nats")],
        description="directories whose disk is watched (comma-separated): the data directory "
        "and JetStream's store directory; one alert per file system, missing ones skipped",
    )
    postgres_url: str | None = Field(
        default=None,
        description="the warm tier, to check the audit trail's hash chain (unset: not checked)",
    )
    config: Path | None = Field(
        default=None, description="zhongshu.yaml when the config bucket holds none"
    )

    @field_validator("watchdog_disks", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()) for part in value.split(",") if part.strip()]
        return value
