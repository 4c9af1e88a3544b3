"""What the notifier opens at start and closes after its consumers have drained: Redis (tokens,
rate limits, alert windows, stream state), the delivery-state bucket (send records and which
cards show each alert), one HTTP pool for the platforms, the live
configuration unless a test fixes it, and the callback flow (its own pool and the subscriptions
bucket's watch)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from zhongshu.contracts.streams import DELIVERY_STATE_KV
from zhongshu.notifier.adapters.alertcards import AlertCardBook
from zhongshu.notifier.adapters.alertwindow import AlertWindow
from zhongshu.notifier.adapters.dingtalk import DingTalkAdapter
from zhongshu.notifier.adapters.feishu import FeishuAdapter
from zhongshu.notifier.adapters.ledger import Ledger
from zhongshu.notifier.adapters.ratelimit import SlidingWindowLimiter
from zhongshu.notifier.adapters.streamstate import StreamState
from zhongshu.notifier.callbacks import CallbackFlow, CallbackRetry
from zhongshu.notifier.channels import Adapters
from zhongshu.notifier.flows import Notifier
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.platforms import DingTalkClient, FeishuClient, TokenCache
from zhongshu.platforms import http as platform_http
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.liveconfig import config_source
from zhongshu.runtime.service import Lifespan


@dataclass(frozen=True)
class NotifierDeps:
    notifier: Notifier  # replies and alerts
    callbacks: CallbackFlow  # task and run events to callback URLs
    redis: Redis


NotifierService = Service[NotifierSettings, NotifierDeps]


def lifespan(
    *, config: HubConfig | None, callback_retry: CallbackRetry
) -> Lifespan[NotifierSettings, NotifierDeps]:
    """``config`` fixed by a test, else the live configuration (the file
    ``ZHONGSHU_CONFIG`` while the bucket is empty)."""

    @contextlib.asynccontextmanager
    async def open_resources(svc: NotifierService) -> AsyncIterator[NotifierDeps]:
        settings = svc.settings
        async with AsyncExitStack() as stack:
            source = await config_source(stack, svc.js, config, path=settings.config)
            redis = await stack.enter_async_context(Redis.from_url(settings.redis_url))
            http = await stack.enter_async_context(
                platform_http.client(timeout=settings.http_timeout_s)
            )
            limiter = SlidingWindowLimiter(redis, hold_s=settings.http_timeout_s + 5)
            state_kv = await svc.js.key_value(DELIVERY_STATE_KV.bucket)
            notifier = Notifier(
                settings=settings,
                config=lambda: source.current,
                adapters=adapters(settings, redis, http, limiter),
                ledger=Ledger(state_kv, svc.publisher),
                cards=AlertCardBook(state_kv),
                limiter=limiter,
                window=AlertWindow(redis),
                streams=StreamState(redis),
            )
            callbacks = await CallbackFlow.open(
                svc.js,
                settings,
                redis,
                callback_retry,
                allow_internal=lambda: source.current.callbacks.allow_internal,
            )
            stack.push_async_callback(callbacks.close)
            yield NotifierDeps(notifier=notifier, callbacks=callbacks, redis=redis)

    return open_resources


def adapters(
    settings: NotifierSettings,
    redis: Redis,
    http: httpx.AsyncClient,
    limiter: SlidingWindowLimiter | None = None,
) -> Adapters:
    """The platforms' senders over one pool, their access tokens cached in Redis; ``limiter``
    paces the streamed cards' CardKit calls."""
    tokens = TokenCache(redis)
    return Adapters(
        dingtalk=DingTalkAdapter(
            DingTalkClient(
                http,
                api_url=settings.dingtalk_api_url,
                oapi_url=settings.dingtalk_oapi_url,
                tokens=tokens,
            )
        ),
        feishu=FeishuAdapter(FeishuClient(http, base_url=settings.feishu_base_url, tokens=tokens)),
        limiter=limiter,
    )
