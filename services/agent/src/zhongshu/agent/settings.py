"""The agent's settings: the runtime's, Redis (QPS schedule, cache, memory, task statuses), and
the model variables the seed names (`MODEL_ENDPOINT`, `MODEL_QPS`, ...), which override the
`model:` section of zhongshu.yaml when set."""

from __future__ import annotations

import os
import socket

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from zhongshu.runtime.settings import ServiceSettings


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, f"ZHONGSHU_{name}")


class AgentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    redis_url: str = Field(
        description="Redis for the QPS schedule, inference cache, memory and task statuses"
    )
    model_endpoint: str | None = Field(
        default=None,
        validation_alias=_alias("MODEL_ENDPOINT"),
        description="OpenAI-compatible base URL, e.g. https://api.deepseek.com/v1",
    )
    model_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("MODEL_API_KEY"))
    model_name: str | None = Field(default=None, validation_alias=_alias("MODEL_NAME"))
    model_qps: float | None = Field(
        default=None, gt=0, validation_alias=_alias("MODEL_QPS"), description="cluster-wide cap"
    )
    model_timeout_s: float | None = Field(
        default=None,
        gt=0,
        validation_alias=_alias("MODEL_TIMEOUT_S"),
        description="budget of one model call, streaming and retries included",
    )
    max_concurrent: int | None = Field(
        default=None,
        gt=0,
        validation_alias=_alias("MAX_CONCURRENT"),
        description="model calls in flight per replica",
    )
    agent_worker: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="this replica's name in TaskStarted",
    )
    agent_stream_interval_s: float = Field(
        default=0.25,
        gt=0,
        description="streamed text is published at most this often (the notifier shows ≤ 5/s)",
    )
    agent_fetch_timeout_s: float = Field(default=10.0, gt=0, description="the fetch_url tool")
    agent_fetch_max_bytes: int = Field(default=64_000, gt=0)
