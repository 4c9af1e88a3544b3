"""notifier: consumes ``chat.reply.>`` and ``alert.>``, delivers to DingTalk and Feishu once;
posts task and run events to callback URLs; publishes ``delivery.<status>.<platform>.<tenant>``.
Wiring only."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from redis.asyncio import Redis

from zhongshu.contracts import channels
from zhongshu.contracts.streams import DELIVERY_STATE_KV
from zhongshu.notifier import handlers
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
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.liveconfig import LiveConfig


def build_service(
    *,
    config: HubConfig | None = None,
    concurrency: int | None = None,
    callback_retry: CallbackRetry | None = None,
) -> Service:
    """A fresh service (tests run several in one process); ``config`` replaces the live
    configuration and ``callback_retry`` the hours-long callback retry schedule (tests)."""
    service = Service(
        "notifier",
        NotifierSettings,
        description="Platform sends and HTTP callbacks, once; audits ambiguous sends.",
        publishes=[
            channels.DELIVERIES,
            channels.CALLBACK_DELIVERIES,
            channels.ALERTS,
            channels.AUDIT,
        ],
    )
    handlers.register(service, concurrency or 8, callback_retry)

    @service.on_startup
    async def open_resources(svc: Service) -> None:
        settings = svc.settings
        assert isinstance(settings, NotifierSettings)
        current: Callable[[], HubConfig]
        if config is not None:
            fixed = config

            def current() -> HubConfig:
                return fixed
        else:
            live = await LiveConfig.open(svc.js, path=settings.config)
            svc.state["live"] = live

            def current() -> HubConfig:
                return live.current

        redis = Redis.from_url(settings.redis_url)
        http = httpx.AsyncClient(
            timeout=settings.http_timeout_s,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        tokens = TokenCache(redis)
        svc.state.update(redis=redis, http=http)
        svc.state[handlers.NOTIFIER] = Notifier(
            settings=settings,
            config=current,
            adapters=Adapters(
                dingtalk=DingTalkAdapter(
                    DingTalkClient(
                        http,
                        api_url=settings.dingtalk_api_url,
                        oapi_url=settings.dingtalk_oapi_url,
                        tokens=tokens,
                    )
                ),
                feishu=FeishuAdapter(
                    FeishuClient(http, base_url=settings.feishu_base_url, tokens=tokens)
                ),
            ),
            ledger=Ledger(await svc.js.key_value(DELIVERY_STATE_KV.bucket)),
            limiter=SlidingWindowLimiter(redis, hold_s=settings.http_timeout_s + 5),
            window=AlertWindow(redis),
            streams=StreamState(redis),
        )
        svc.state[handlers.CALLBACKS] = await CallbackFlow.open(
            svc.js, settings, redis, callback_retry or CallbackRetry()
        )

    service.readiness_ping("redis")

    @service.on_shutdown
    async def close_resources(svc: Service) -> None:
        if "live" in svc.state:
            await svc.state["live"].close()
        if handlers.CALLBACKS in svc.state:
            await svc.state[handlers.CALLBACKS].close()
        if "http" in svc.state:
            await svc.state["http"].aclose()
        if "redis" in svc.state:
            await svc.state["redis"].aclose()

    return service


service = build_service()

if __name__ == "__main__":
    service.main()
