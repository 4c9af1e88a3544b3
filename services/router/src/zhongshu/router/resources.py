"""What the router opens at start and closes after its consumer has drained: Redis (rate
limits, the task cache, department and token caches), one HTTP pool for the platforms' contact
look-ups, the watched grants, and the live configuration unless a test fixes it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from zhongshu.platforms import DingTalkClient, FeishuClient, TokenCache
from zhongshu.router.adapters.departments import (
    CachedDepartments,
    DingTalkDirectory,
    FeishuDirectory,
)
from zhongshu.router.adapters.ratelimit import RedisRateLimiter
from zhongshu.router.adapters.taskcache import RedisTaskCache
from zhongshu.router.inbound import InboundRouter
from zhongshu.router.rules import RouterRules, load_rules
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime import Service
from zhongshu.runtime.grants import open_grants
from zhongshu.runtime.liveconfig import ConfigSource, config_source
from zhongshu.runtime.service import Lifespan


@dataclass(frozen=True)
class RouterDeps:
    router: InboundRouter
    redis: Redis


RouterService = Service[RouterSettings, RouterDeps]


def lifespan(
    *, config: ConfigSource | None, rules: RouterRules | None
) -> Lifespan[RouterSettings, RouterDeps]:
    """``config`` and ``rules`` fixed by a test, else the live configuration and the rules it
    holds (or the file ``ZHONGSHU_ROUTER_RULES`` pins)."""

    @contextlib.asynccontextmanager
    async def open_resources(svc: RouterService) -> AsyncIterator[RouterDeps]:
        settings = svc.settings
        async with AsyncExitStack() as stack:
            redis = await stack.enter_async_context(Redis.from_url(settings.redis_url))
            # httpx logs every request URL at INFO, and DingTalk's oapi carries the access token
            # (and /gettoken the app secret) in the query: keep them out of the logs.
            logging.getLogger("httpx").setLevel(logging.WARNING)
            http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=settings.router_departments_timeout_s)
            )
            source = await config_source(stack, svc.js, config)
            grants, grant_store = await open_grants(stack, svc.js)
            yield RouterDeps(
                router=InboundRouter(
                    source,
                    rules or (load_rules(settings.router_rules) if settings.router_rules else None),
                    RedisRateLimiter(redis, memo_ttl_s=settings.router_memo_ttl_s),
                    RedisTaskCache(redis),
                    departments(settings, redis, http),
                    grants,
                    grant_store,
                ),
                redis=redis,
            )

    return open_resources


def departments(
    settings: RouterSettings, redis: Redis, http: httpx.AsyncClient
) -> CachedDepartments:
    """Each platform's contact directory, its answers cached in Redis."""
    tokens = TokenCache(redis)
    return CachedDepartments(
        redis,
        {
            "feishu": FeishuDirectory(
                FeishuClient(http, base_url=settings.feishu_base_url, tokens=tokens)
            ),
            "dingtalk": DingTalkDirectory(
                DingTalkClient(http, oapi_url=settings.dingtalk_oapi_url, tokens=tokens)
            ),
        },
        ttl_s=settings.router_departments_ttl_s,
        negative_ttl_s=settings.router_departments_negative_ttl_s,
    )
