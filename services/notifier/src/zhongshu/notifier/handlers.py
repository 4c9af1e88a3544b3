"""The notifier's consumers: decode (done by the runtime), hand to a flow (replies, alerts and
their state changes, callbacks)."""

from __future__ import annotations

from typing import Any

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AlertRaised,
    AlertStateChanged,
    ReplyGenerated,
    TaskRequested,
)
from zhongshu.notifier import callbacks
from zhongshu.notifier.callbacks import CallbackRetry, EventHead
from zhongshu.notifier.resources import NotifierDeps, NotifierService
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime import Delivery

# POSTs wait on receivers we do not control (up to the callback timeout each): many in flight.
CALLBACK_CONCURRENCY = 32
# Events waiting out a receiver's backoff count as unacked: room for hours of one tenant's
# events, so a receiver that is down does not stop the consumer for everybody else.
CALLBACK_MAX_ACK_PENDING = 100_000
# Rate-limited sends wait for a slot, and DingTalk's 10-minute block outlasts the default
# backoff: give transient trouble about 25 minutes before the DLQ.
REPLY_BACKOFF_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def register(
    service: NotifierService, concurrency: int | None, callback_retry: CallbackRetry
) -> None:
    """``concurrency`` fixes the replies in flight (tests), else ``reply_concurrency``."""

    def reply_options(settings: NotifierSettings) -> dict[str, Any]:
        return {"concurrency": concurrency or settings.reply_concurrency}

    @service.consumes(
        stream=streams.REPLIES.name,
        subjects=subjects.ALL_CHAT_REPLIES,
        durable="notifier-replies",
        event=ReplyGenerated,
        options_from=reply_options,
        max_deliver=10,
        backoff_s=REPLY_BACKOFF_S,
    )
    async def on_reply(
        deps: NotifierDeps, env: Envelope[ReplyGenerated], delivery: Delivery
    ) -> None:
        await deps.notifier.reply(env, delivery)

    @service.consumes(
        stream=streams.ALERTS.name,
        subjects=subjects.ALL_ALERTS,
        durable="notifier-alerts",
        event=AlertRaised,
        # Closers of an alert window sleep for the window: let others through meanwhile.
        concurrency=16,
        max_deliver=10,
        backoff_s=REPLY_BACKOFF_S,
    )
    async def on_alert(deps: NotifierDeps, env: Envelope[AlertRaised], delivery: Delivery) -> None:
        await deps.notifier.alert(env, delivery)

    @service.consumes(
        stream=streams.ALERTS.name,
        subjects=subjects.ALL_ALERT_STATES,
        durable="notifier-alert-states",
        event=AlertStateChanged,
        concurrency=8,
        max_deliver=10,
        backoff_s=REPLY_BACKOFF_S,
    )
    async def on_alert_state(
        deps: NotifierDeps, env: Envelope[AlertStateChanged], delivery: Delivery
    ) -> None:
        await deps.notifier.alert_state(env, delivery)

    register_callbacks(service, callback_retry)


def register_callbacks(service: NotifierService, retry: CallbackRetry) -> None:
    """Task and run events to subscriptions and task callbacks; task requests' own callback
    URLs are remembered by a consumer of their own, which the events consumer can wait for."""
    options: dict[str, Any] = {
        "concurrency": CALLBACK_CONCURRENCY,
        "max_deliver": retry.max_deliver,
        "backoff_s": retry.backoff_s,
        "max_ack_pending": CALLBACK_MAX_ACK_PENDING,
    }

    @service.consumes(
        stream=streams.TASKS.name,
        subjects=(subjects.ALL_TASK_REQUESTED,),
        durable=callbacks.TARGETS_DURABLE,
        event=TaskRequested,
        max_deliver=retry.max_deliver,
        backoff_s=retry.backoff_s,
    )
    async def on_task_request(
        deps: NotifierDeps, env: Envelope[TaskRequested], delivery: Delivery
    ) -> None:
        await deps.callbacks.remember_targets(env, delivery)

    @service.consumes(
        stream=streams.TASKS.name,
        subjects=(subjects.ALL_TASK_REQUESTED, subjects.ALL_TASK_EVENTS),
        durable=callbacks.EVENTS_DURABLE,
        decode=callbacks.decode_head,
        **options,
    )
    async def on_task_event(deps: NotifierDeps, head: EventHead, delivery: Delivery) -> None:
        await deps.callbacks.on_event(head, delivery)

    @service.consumes(
        stream=streams.WORKFLOWS.name,
        subjects=(subjects.ALL_WORKFLOW_RUNS,),
        durable=callbacks.RUNS_DURABLE,
        decode=callbacks.decode_head,
        **options,
    )
    async def on_run_event(deps: NotifierDeps, head: EventHead, delivery: Delivery) -> None:
        await deps.callbacks.on_event(head, delivery)
