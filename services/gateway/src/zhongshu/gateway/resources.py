"""What the gateway opens at start and closes at stop, in reverse: Redis, the PostgreSQL warm
tier, the buckets and stream it writes, the watched revoked tokens and the token verifier,
assembled into the :class:`~zhongshu.gateway.context.Gateway` the routes use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from redis.asyncio import Redis

from zhongshu.contracts.definitions import Subscription, TriggerDefinition, WorkflowDefinition
from zhongshu.contracts.streams import (
    DEDUPE_KV,
    GRANTS_KV,
    REVOKED_TOKENS_KV,
    SUBSCRIPTIONS_KV,
    TRIGGERS_KV,
    WORKFLOWS_KV,
)
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
from zhongshu.runtime.grants import GrantStore
from zhongshu.runtime.revocations import RevokedTokens
from zhongshu.runtime.service import Service

GatewayService = Service[GatewaySettings, Gateway]


@contextlib.asynccontextmanager
async def lifespan(svc: GatewayService) -> AsyncIterator[Gateway]:
    settings = svc.settings
    js = svc.js
    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(Redis.from_url(settings.redis_url))
        warm = await WarmTier.open(settings.postgres_url)
        stack.push_async_callback(warm.close)
        hot = HotTier(redis)
        revoked_kv = await bucket(js, REVOKED_TOKENS_KV.bucket)
        revoked = RevokedTokens.watching(js)
        revoked.watched.start()
        stack.push_async_callback(revoked.watched.stop)
        # Serve only once the revocations are read: a revoked token must never slip through.
        await revoked.watched.ready.wait()
        flow = FlowControl(
            RedisRateLimiter(redis),
            per_token=settings.api_rate,
            per_tenant=settings.api_tenant_rate,
            daily_tasks=settings.api_daily_tasks,
        )
        yield Gateway(
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
                keys=IdempotencyStore(await bucket(js, DEDUPE_KV.bucket)),
                bus=TaskBus(svc.publisher, timeout_s=settings.publish_timeout_s),
                hot=hot,
            ),
            hot=hot,
            warm=warm,
            schedules=ScheduleStore(js),
            workflows=DefinitionStore(
                await bucket(js, WORKFLOWS_KV.bucket), WorkflowDefinition, "workflow"
            ),
            triggers=DefinitionStore(
                await bucket(js, TRIGGERS_KV.bucket), TriggerDefinition, "trigger"
            ),
            subscriptions=DefinitionStore(
                await bucket(js, SUBSCRIPTIONS_KV.bucket), Subscription, "subscription"
            ),
            audit=AuditTrail(svc.publisher),
            grants=GrantStore(await bucket(js, GRANTS_KV.bucket)),
            revoked=revoked,
            revoked_kv=revoked_kv,
            callback_key=settings.callback_key.get_secret_value().encode(),
            max_body_bytes=settings.api_max_body_bytes,
            redis=redis,
        )


async def bucket(js: JetStreamContext, name: str) -> KeyValue:
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        raise RuntimeFailure(f"KV bucket {name!r} is missing; run `zhongshu provision`") from None
