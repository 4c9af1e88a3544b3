"""What a handler publishes in answer to one delivered message: events in the input's tenant,
conversation and correlation, under ids derived from the input (``contracts.ids``), so a handler
that runs again on a redelivery publishes the same ids (dropped by JetStream within its window,
and by the consumers' ledgers after it)."""

from __future__ import annotations

from typing import Any

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import Event, ReplyGenerated
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.runtime.consumer import Delivery

FINAL_STAGE = "final"
"""The stage of a whole (not streamed) reply's id: ``<reply_id>:final``, what the notifier
expects of the agent's and the workflows' replies."""


class Outbox:
    """Publishes through ``delivery``: ``publish`` is pipelined (the input is acked only after
    every PubAck), ``publish_now`` waits for its PubAck (an event that must be stored before what
    follows). ``parent_id`` is what ``msg_id(stage)`` derives from: the input's id, for the
    outbox of :meth:`answering`."""

    def __init__(
        self,
        delivery: Delivery,
        *,
        source: str,
        tenant: str,
        parent_id: str = "",
        conversation_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.delivery = delivery
        self.source = source
        self.tenant = tenant
        self.parent_id = parent_id
        self.conversation_id = conversation_id
        self.correlation_id = correlation_id

    @classmethod
    def answering(
        cls,
        env: wire.Envelope[Any],
        delivery: Delivery,
        *,
        source: str,
        tenant: str | None = None,
    ) -> Outbox:
        """The outbox of the input ``env``: its tenant (unless given), conversation, and
        correlation (its own id when it has none); ids derived from its id."""
        return cls(
            delivery,
            source=source,
            tenant=tenant if tenant is not None else env.tenant,
            parent_id=env.id,
            conversation_id=env.conversation_id,
            correlation_id=env.correlation_id or env.id,
        )

    def msg_id(self, stage: str) -> str:
        """The id of what ``stage`` publishes for the input: the same on every redelivery."""
        return derive_msg_id(self.parent_id, stage)

    def envelope(
        self, event: Event, msg_id: str, *, correlation_id: str | None = None
    ) -> wire.Envelope[Event]:
        return wire.make_envelope(
            event,
            id=msg_id,
            source=self.source,
            tenant=self.tenant,
            conversation_id=self.conversation_id,
            correlation_id=correlation_id or self.correlation_id,
        )

    async def publish(
        self, subject: str, event: Event, msg_id: str, *, correlation_id: str | None = None
    ) -> None:
        """Send now; the PubAck is awaited with the rest before the input's ack."""
        envelope = self.envelope(event, msg_id, correlation_id=correlation_id)
        await self.delivery.publish_envelope(subject, envelope)

    async def publish_now(
        self, subject: str, event: Event, msg_id: str, *, correlation_id: str | None = None
    ) -> None:
        """Send and wait for the PubAck."""
        envelope = self.envelope(event, msg_id, correlation_id=correlation_id)
        await self.delivery.publisher.publish(subject, wire.encode(envelope), msg_id=msg_id)

    async def reply(self, reply: ReplyGenerated, msg_id: str | None = None) -> None:
        """A reply to a chat, on ``chat.reply.<platform>.<tenant>``; its id defaults to the one
        of a whole reply (``<reply_id>:final``)."""
        subject = subjects.chat_reply(reply.platform, reply.tenant)
        await self.publish(subject, reply, msg_id or derive_msg_id(reply.reply_id, FINAL_STAGE))
