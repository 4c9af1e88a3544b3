"""The gateway's settings: the runtime's, the stores it reads (Redis, PostgreSQL), how it checks
JWT bearer tokens, the callback key that derives subscription secrets, and its flow control."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from zhongshu.runtime.hubconfig import Rate
from zhongshu.runtime.settings import ServiceSettings

# `60/min` in the environment, not JSON.
RateSetting = Annotated[Rate, NoDecode]


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    redis_url: str = Field(description="Redis: task statuses (hot tier), rate limits and quotas")
    postgres_url: str = Field(description="PostgreSQL: the warm tier the projector builds")
    callback_key: SecretStr = Field(
        description="derives each subscription's signing secret (shared with the notifier)"
    )

    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 key of bearer tokens (what `zhongshu token create` signs)"
    )
    jwt_jwks_url: str | None = Field(
        default=None, description="JWKS of an identity provider for RS256/ES256 bearer tokens"
    )
    jwt_issuer: str | None = Field(default=None, description="required `iss` when set")
    jwt_audience: str | None = Field(default=None, description="required `aud` when set")
    jwt_leeway_s: float = Field(default=30.0, ge=0, description="clock skew allowed on exp/nbf")

    api_rate: RateSetting = Field(
        default=Rate(count=60, period_s=60), description="requests per API token, e.g. 60/min"
    )
    api_tenant_rate: RateSetting = Field(
        default=Rate(count=600, period_s=60), description="requests per tenant, all tokens"
    )
    api_daily_tasks: int = Field(
        default=10_000, ge=0, description="tasks a tenant may create per UTC day; 0 = no limit"
    )
    api_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    publish_timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> GatewaySettings:
        # Without a key every request would be refused: fail at start instead.
        if self.jwt_secret is None and not self.jwt_jwks_url:
            raise ValueError(
                "set ZHONGSHU_JWT_SECRET (HS256) or ZHONGSHU_JWT_JWKS_URL (RS256/ES256): "
                "the gateway accepts only signed bearer tokens"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            # RFC 7518 §3.2: an HS256 key at least as long as the hash (256 bits).
            raise ValueError("ZHONGSHU_JWT_SECRET must be at least 32 characters long")
        return self
