"""Start-up and shutdown of the gateway's resources: the buckets and stream it writes, Redis,
PostgreSQL and the token verifier, assembled into the :class:`~zhongshu.gateway.context.Gateway`
the routes use; and the readiness checks behind `/readyz`."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI
from nats.js.errors import BucketNotFoundError
from redis.asyncio import Redis

from zhongshu.contracts.definitions import Subscription, TriggerDefinition, WorkflowDefinition
from zhongshu.contracts.streams import DEDUPE_KV, SUBSCRIPTIONS_KV, TRIGGERS_KV, WORKFLOWS_KV
from zhongshu.gateway.adapters.audit import AuditTrail
from zhongshu.gateway.adapters.definitions import DefinitionStore
from zhongshu.gateway.adapters.hottier import HotTier
from zhongshu.gateway.adapters.idempotency import IdempotencyStore
from zhongshu.gateway.adapters.ratelimit import RedisRateLimiter
from zhongshu.gateway.adapters.schedules import ScheduleStore
from zhongshu.gateway.adapters.taskbus import TaskBus
from zhongshu.gateway.adapters.warmtier import WarmTier
from zhongshu.gateway.auth import TokenVerifier
from zhongshu.gateway.context import Gateway
from zhongshu.gateway.quotas import FlowControl
from zhongshu.gateway.settings import GatewaySettings
from zhongshu.gateway.submission import TaskDesk
from zhongshu.runtime.errors import RuntimeFailure
from zhongshu.runtime.service import Service

REDIS_KEY = "gateway_redis"


async def open_gateway(service: Service, app: FastAPI) -> None:
    settings = cast(GatewaySettings, service.settings)
    js = service.js

    async def bucket(name: str):  # type: ignore[no-untyped-def]
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            raise RuntimeFailure(
                f"KV bucket {name!r} is missing; run `zhongshu provision`"
            ) from None

    redis: Redis = Redis.from_url(settings.redis_url)
    service.state[REDIS_KEY] = redis
    warm = await WarmTier.open(settings.postgres_url)
    hot = HotTier(redis)
    flow = FlowControl(
        RedisRateLimiter(redis),
        per_token=settings.api_rate,
        per_tenant=settings.api_tenant_rate,
        daily_tasks=settings.api_daily_tasks,
    )
    app.state.gateway = Gateway(
        tokens=TokenVerifier(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
        ),
        flow=flow,
        desk=TaskDesk(
            flow=flow,
            keys=IdempotencyStore(await bucket(DEDUPE_KV.bucket)),
            bus=TaskBus(service.publisher, timeout_s=settings.publish_timeout_s),
            hot=hot,
        ),
        hot=hot,
        warm=warm,
        schedules=ScheduleStore(js),
        workflows=DefinitionStore(
            await bucket(WORKFLOWS_KV.bucket), WorkflowDefinition, "workflow"
        ),
        triggers=DefinitionStore(await bucket(TRIGGERS_KV.bucket), TriggerDefinition, "trigger"),
        subscriptions=DefinitionStore(
            await bucket(SUBSCRIPTIONS_KV.bucket), Subscription, "subscription"
        ),
        audit=AuditTrail(service.publisher),
        callback_key=settings.callback_key.get_secret_value().encode(),
        max_body_bytes=settings.api_max_body_bytes,
    )


async def close_gateway(service: Service, app: FastAPI) -> None:
    gateway = getattr(app.state, "gateway", None)
    if isinstance(gateway, Gateway):
        del app.state.gateway
        await gateway.warm.close()
    redis: Redis | None = service.state.pop(REDIS_KEY, None)
    if redis is not None:
        await redis.aclose()


def readiness(service: Service, app: FastAPI) -> None:
    @service.readiness("redis")
    async def redis_ready() -> bool:
        redis: Redis | None = service.state.get(REDIS_KEY)
        return redis is not None and bool(await redis.ping())

    @service.readiness("postgres")
    async def postgres_ready() -> bool:
        gateway = getattr(app.state, "gateway", None)
        return isinstance(gateway, Gateway) and await gateway.warm.ping()
