"""The notifier's consumers: decode (done by the runtime), hand to a flow."""

from __future__ import annotations

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AlertRaised, ReplyGenerated
from zhongshu.notifier.flows import Notifier
from zhongshu.runtime import Delivery, Service

NOTIFIER = "notifier"  # key of the opened resources in service.state
# Rate-limited sends wait for a slot, and DingTalk's 10-minute block outlasts the default
# backoff: give transient trouble about 25 minutes before the DLQ.
REPLY_BACKOFF_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def register(service: Service, concurrency: int) -> None:
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
