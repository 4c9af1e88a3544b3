"""The notifier's consumers: decode (done by the runtime), hand to a flow (replies, alerts,
callbacks)."""

from __future__ import annotations

from typing import Any

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AlertRaised, ReplyGenerated, TaskRequested
from zhongshu.notifier import callbacks
from zhongshu.notifier.callbacks import CallbackFlow, CallbackRetry, EventHead
from zhongshu.notifier.flows import Notifier
from zhongshu.runtime import Delivery, Service

NOTIFIER = "notifier"  # key of the opened resources in service.state
CALLBACKS = "callbacks"
# POSTs wait on receivers we do not control (up to the callback timeout each): many in flight.
CALLBACK_CONCURRENCY = 32
# Events waiting out a receiver's backoff count as unacked: room for hours of one tenant's
# events, so a receiver that is down does not stop the consumer for everybody else.
CALLBACK_MAX_ACK_PENDING = 100_000
# Rate-limited sends wait for a slot, and DingTalk's 10-minute block outlasts the default
# backoff: give transient trouble about 25 minutes before the DLQ.
REPLY_BACKOFF_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def register(
    service: Service, concurrency: int, callback_retry: CallbackRetry | None = None
) -> None:
    @service.consumer(
        stream=streams.REPLIES.name,
        subjects=subjects.ALL_CHAT_REPLIES,
        durable="notifier-replies",
        event=ReplyGenerated,
        concurrency=concurrency,
        max_deliver=10,
        backoff_s=REPLY_BACKOFF_S,
    )
    async def on_reply(env: Envelope[ReplyGenerated], delivery: Delivery) -> None:
        notifier: Notifier = service.state[NOTIFIER]
        await notifier.reply(env, delivery)

    @service.consumer(
        stream=streams.ALERTS.name,
        subjects=subjects.ALL_ALERTS,
        durable="notifier-alerts",
        event=AlertRaised,
        # Closers of an alert window sleep for the window: let others through meanwhile.
        concurrency=16,
        max_deliver=10,
        backoff_s=REPLY_BACKOFF_S,
    )
    async def on_alert(env: Envelope[AlertRaised], delivery: Delivery) -> None:
        notifier: Notifier = service.state[NOTIFIER]
        await notifier.alert(env, delivery)

    register_callbacks(service, callback_retry or CallbackRetry())


def register_callbacks(service: Service, retry: CallbackRetry) -> None:
    """Task and run events to subscriptions and task callbacks; task requests' own callback
    URLs are remembered by a consumer of their own, which the events consumer can wait for."""
    options: dict[str, Any] = {
        "concurrency": CALLBACK_CONCURRENCY,
        "max_deliver": retry.max_deliver,
        "backoff_s": retry.backoff_s,
        "max_ack_pending": CALLBACK_MAX_ACK_PENDING,
    }

    @service.consumer(
        stream=streams.TASKS.name,
        subjects=(subjects.ALL_TASK_REQUESTED,),
        durable=callbacks.TARGETS_DURABLE,
        event=TaskRequested,
        max_deliver=retry.max_deliver,
        backoff_s=retry.backoff_s,
    )
    async def on_task_request(env: Envelope[TaskRequested], delivery: Delivery) -> None:
        flow: CallbackFlow = service.state[CALLBACKS]
        await flow.remember_targets(env, delivery)

    @service.consumer(
        stream=streams.TASKS.name,
        subjects=(subjects.ALL_TASK_REQUESTED, subjects.ALL_TASK_EVENTS),
        durable=callbacks.EVENTS_DURABLE,
        decode=callbacks.decode_head,
        **options,
    )
    async def on_task_event(head: EventHead, delivery: Delivery) -> None:
        flow: CallbackFlow = service.state[CALLBACKS]
        await flow.on_event(head, delivery)

    @service.consumer(
        stream=streams.WORKFLOWS.name,
        subjects=(subjects.ALL_WORKFLOW_RUNS,),
        durable=callbacks.RUNS_DURABLE,
        decode=callbacks.decode_head,
        **options,
    )
    async def on_run_event(head: EventHead, delivery: Delivery) -> None:
        flow: CallbackFlow = service.state[CALLBACKS]
        await flow.on_event(head, delivery)
