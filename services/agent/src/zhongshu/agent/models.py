"""The model setup in force: providers in priority order, the cluster-wide QPS schedule, the
per-replica concurrency gate and the client, rebuilt when the live configuration changes them.

The environment (`MODEL_ENDPOINT`, `MODEL_QPS`, ...) wins over `model:` in zhongshu.yaml, as the
seed names those variables; a provider given by environment comes first, the file's follow as
fallbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from zhongshu.agent.adapters.qps import ClusterRateLimiter, ModelGate
from zhongshu.agent.llm.client import AttemptRecord, LLMClient
from zhongshu.agent.llm.types import Provider
from zhongshu.agent.metrics import UPSTREAM_ATTEMPT_SECONDS, UPSTREAM_ERRORS
from zhongshu.agent.settings import AgentSettings
from zhongshu.runtime.hubconfig import HubConfig

log = logging.getLogger("zhongshu.agent.models")

ENV_PROVIDER = "env"


@dataclass(frozen=True)
class ModelSetup:
    providers: tuple[Provider, ...]
    qps: float
    timeout_s: float
    max_concurrent: int
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def signature(self) -> str:
        """What a cached answer depends on: the models asked, in order (not keys or URLs)."""
        return ",".join(f"{p.name}/{p.model}" for p in self.providers)


def effective_setup(config: HubConfig, settings: AgentSettings) -> ModelSetup:
    model = config.model
    providers = [
        Provider(
            name=p.name,
            endpoint=p.endpoint,
            model=p.model,
            api_key=p.api_key.get_secret_value() if p.api_key else None,
        )
        for p in model.providers
        if p.endpoint.strip()  # `${MODEL_ENDPOINT}` left empty means "not configured"
    ]
    if settings.model_endpoint:
        key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
        providers.insert(
            0,
            Provider(
                name=ENV_PROVIDER,
                endpoint=settings.model_endpoint,
                model=settings.model_name or (providers[0].model if providers else "default"),
                api_key=key,
            ),
        )
    return ModelSetup(
        providers=tuple(providers),
        qps=settings.model_qps or model.qps,
        timeout_s=settings.model_timeout_s or model.timeout_s,
        max_concurrent=settings.max_concurrent or model.max_concurrent,
        temperature=model.temperature,
        max_tokens=model.max_tokens,
    )


def _meter_attempt(record: AttemptRecord) -> None:
    UPSTREAM_ATTEMPT_SECONDS.labels(record.provider).observe(record.duration_s)
    if record.code is not None:
        UPSTREAM_ERRORS.labels(record.provider, record.code).inc()


class Models:
    """Holds the client for the current setup; ``refresh`` swaps it when the setup changed."""

    def __init__(self, redis: Redis, http: httpx.AsyncClient) -> None:
        self._redis = redis
        self._http = http
        self.setup: ModelSetup | None = None
        self.client: LLMClient | None = None
        self.limiter: ClusterRateLimiter | None = None
        self.gate: ModelGate | None = None

    def refresh(self, setup: ModelSetup) -> None:
        if setup == self.setup:
            return
        if self.limiter is None:
            self.limiter = ClusterRateLimiter(self._redis, qps=setup.qps)
        self.limiter.qps = setup.qps  # the schedule is shared: only its spacing changes
        if self.gate is None or self.gate.max_concurrent != setup.max_concurrent:
            self.gate = ModelGate(self.limiter, setup.max_concurrent)
        self.client = (
            LLMClient(
                setup.providers,
                timeout_s=setup.timeout_s,
                gate=self.gate,
                http=self._http,
                on_attempt=_meter_attempt,
            )
            if setup.providers
            else None
        )
        if self.setup is not None:
            log.info(
                "model setup changed: %s, qps %s, timeout %ss, %d concurrent",
                setup.signature or "no provider",
                setup.qps,
                setup.timeout_s,
                setup.max_concurrent,
            )
        self.setup = setup
