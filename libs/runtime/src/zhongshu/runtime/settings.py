"""Settings base for every service: environment first (prefix ``ZHONGSHU_``), typed, fail fast."""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from zhongshu.runtime.errors import ConfigurationError

ENV_PREFIX = "ZHONGSHU_"


class ServiceSettings(BaseSettings):
    """What every service needs; a service subclasses it and adds its own fields.

    Required fields of a subclass have no default, so a missing variable stops start-up with a
    message naming it (see :func:`load_settings`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s)")
    health_port: int = Field(
        default=0, ge=0, le=65535, description="side port for /healthz /readyz /metrics; 0 = any"
    )
    health_host: str = "127.0.0.1"
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    drain_timeout_s: float = Field(
        default=30.0, gt=0, description="how long SIGTERM waits for in-flight work"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0)
    ack_wait_s: float | None = Field(
        default=None, gt=0, description="override every consumer's ack_wait (redelivery delay)"
    )
    uvloop: bool = True
    heartbeat_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="how often this instance writes its heartbeat for the watchdog; 0 = never",
    )
    gc_gen0_threshold: int = Field(
        default=10_000,
        ge=0,
        description="after start-up: freeze what it allocated and collect the young generation "
        "every this many allocations (CPython: 700); 0 leaves the collector as it is",
    )


S = TypeVar("S", bound=BaseSettings)


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line per bad field, named as the environment variable an operator would set."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = [f"invalid configuration for {cls.__name__}:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        variable = (prefix + field).upper()
        problem = "is required but not set" if error["type"] == "missing" else error["msg"]
        lines.append(f"  {variable}: {problem}")
    return "\n".join(lines)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment or raise :class:`ConfigurationError` whose text names
    each missing or invalid variable (never its value: it may be a secret)."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(cls, exc)) from None
