"""notifier: consumes ``chat.reply.>``, ``alert.>`` and ``alerting.state.*`` (redraws alert
cards), delivers to DingTalk and Feishu once;
posts task and run events to callback URLs; publishes ``delivery.<status>.<platform>.<tenant>``.
Wiring only."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.notifier import handlers, resources
from zhongshu.notifier.callbacks import CallbackRetry
from zhongshu.notifier.resources import NotifierService
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig


def build_service(
    *,
    config: HubConfig | None = None,
    concurrency: int | None = None,
    callback_retry: CallbackRetry | None = None,
) -> NotifierService:
    """A fresh service (tests run several in one process); ``config`` replaces the live
    configuration and ``callback_retry`` the hours-long callback retry schedule (tests)."""
    retry = callback_retry or CallbackRetry()
    service: NotifierService = Service(
        "notifier",
        NotifierSettings,
        resources.lifespan(config=config, callback_retry=retry),
        description="Platform sends and HTTP callbacks, once; audits ambiguous sends.",
        publishes=[
            channels.DELIVERIES,
            channels.CALLBACK_DELIVERIES,
            channels.ALERTS,
            channels.AUDIT,
        ],
    )
    service.readiness_ping("redis", lambda deps: deps.redis)
    handlers.register(service, concurrency, retry)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
