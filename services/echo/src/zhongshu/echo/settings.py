"""Echo's settings: the runtime's, plus an artificial delay for drain and crash tests."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zhongshu.runtime.settings import ServiceSettings


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    echo_delay_s: float = Field(default=0.0, ge=0, description="pretend work per message")
