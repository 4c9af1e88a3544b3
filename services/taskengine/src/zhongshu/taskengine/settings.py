"""The task engine's settings: the runtime's, plus how steps run (concurrency, retry backoff,
what `collect` may fetch) and the hub's callback key for signing notify callbacks."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from zhongshu.runtime.settings import ServiceSettings


class TaskEngineSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    callback_key: SecretStr | None = Field(
        default=None,
        description="the hub's callback key (ZHONGSHU_CALLBACK_KEY): signs notify callbacks; "
        "without it a notify step with a callback target fails",
    )
    taskengine_step_concurrency: int = Field(
        default=16, gt=0, description="steps run at once per replica"
    )
    taskengine_retry_backoff_s: float = Field(
        default=2.0, ge=0, description="wait before a step's first retry; doubles per retry"
    )
    taskengine_retry_backoff_max_s: float = Field(default=60.0, ge=0)
    taskengine_collect_max_bytes: int = Field(
        default=256_000, gt=0, description="a collect response beyond this is cut (and says so)"
    )
    taskengine_collect_allow: tuple[str, ...] = Field(
        default=(),
        description="URL prefixes collect steps may fetch (JSON list); empty = any URL",
    )

    def retry_backoff_s(self, failure: int) -> float:
        """The wait after the n-th failure of a step."""
        delay = self.taskengine_retry_backoff_s * 2 ** max(0, failure - 1)
        return float(min(delay, self.taskengine_retry_backoff_max_s))
