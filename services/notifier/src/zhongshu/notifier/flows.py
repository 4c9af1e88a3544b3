"""The notifier's two flows, replies and alerts, over the resources opened at start-up."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from prometheus_client import Counter

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AlertRaised,
    AuditRecorded,
    ReplyDelivered,
    ReplyDeliveryFailed,
    ReplyGenerated,
)
from zhongshu.contracts.events.audit import OUTCOME_AMBIGUOUS
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.notifier import domain
from zhongshu.notifier.adapters.alertwindow import AlertWindow
from zhongshu.notifier.adapters.ledger import Fenced, Ledger
from zhongshu.notifier.adapters.ratelimit import Confirm, SlidingWindowLimiter
from zhongshu.notifier.adapters.results import Delivered, Rejected, SendResult
from zhongshu.notifier.adapters.streamstate import StreamState
from zhongshu.notifier.channels import (
    Adapters,
    CardStream,
    Channel,
    NoRoute,
    alert_channel,
    for_part,
    reply_channel,
)
from zhongshu.notifier.delivery import RetryLater, deliver_once
from zhongshu.notifier.domain import DeliveryRecord
from zhongshu.notifier.message import Outgoing
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime import Delivery
from zhongshu.runtime.hubconfig import HubConfig

log = logging.getLogger("zhongshu.notifier")
SOURCE = "zhongshu/notifier"
# How often a final chunk looks whether the card update in flight before it has finished.
TURN_POLL_S = 0.05

OUTCOMES = Counter(
    "zhongshu_notifier_deliveries_total",
    "Outgoing sends by final state (delivered, failed, ambiguous)",
    ("platform", "kind", "state"),
)
SKIPPED_CHUNKS = Counter(
    "zhongshu_notifier_skipped_chunks_total", "Non-final stream chunks not sent (final only)"
)
RATE_WAIT = Counter(
    "zhongshu_notifier_rate_limit_wait_seconds_total", "Time spent waiting for a send slot"
)


@dataclass
class Notifier:
    settings: NotifierSettings
    config: Callable[[], HubConfig]
    adapters: Adapters
    ledger: Ledger
    limiter: SlidingWindowLimiter
    window: AlertWindow
    streams: StreamState

    # --- replies --------------------------------------------------------------------------

    async def reply(self, env: Envelope[ReplyGenerated], delivery: Delivery) -> None:
        reply = env.data
        try:
            channel = reply_channel(reply, self.config(), self.adapters, self.settings)
        except NoRoute as exc:
            if reply.final:
                record = DeliveryRecord(
                    state="failed", reason=str(exc), code="no_route", at=datetime.now(UTC)
                )
                await self._publish_outcome(env, delivery, record)
            return
        if reply.stream_id and channel.stream is not None:
            await self._stream(env, delivery, channel, channel.stream)
            return
        if not reply.final:
            # No card to update on this path: each chunk holds the whole text so far, so the
            # final chunk alone says everything.
            SKIPPED_CHUNKS.inc()
            return
        message = Outgoing(
            kind=reply.kind,
            text=reply.text,
            title=reply.title,
            card=reply.card,
            mention_user_ids=reply.mention_user_ids,
            idempotency_key=reply.reply_id,
        )
        key = domain.record_key("reply", reply.reply_id, str(reply.chunk_index))
        record = await self._deliver(key, channel, message, delivery, kind="reply")
        await self._publish_outcome(env, delivery, record)

    async def _deliver(
        self, key: str, channel: Channel, message: Outgoing, delivery: Delivery, *, kind: str
    ) -> DeliveryRecord:
        async def wait_slot() -> Confirm:
            confirms: list[Confirm] = []
            for limit in channel.limits:
                waited, confirm = await self.limiter.take(limit.key, limit.count, limit.window_s)
                confirms.append(confirm)
                RATE_WAIT.inc(waited)

            async def confirm_all() -> None:
                for confirm in confirms:
                    await confirm()

            return confirm_all

        async def send_part(part: str, offset: int) -> SendResult:
            return await channel.send(for_part(message, part, offset))

        try:
            async with delivery.keepalive():
                record = await deliver_once(
                    self.ledger,
                    key,
                    text=message.text,
                    idempotent=channel.idempotent,
                    max_bytes=channel.max_bytes,
                    send_part=send_part,
                    wait_slot=wait_slot,
                    in_flight_s=self._in_flight_s,
                )
        except Fenced as exc:
            raise RetryLater(str(exc)) from exc
        OUTCOMES.labels(channel.platform, kind, record.state).inc()
        if record.state != "delivered":
            log.warning("%s: %s (%s)", channel.description, record.state, record.reason)
        return record

    async def _publish_outcome(
        self, env: Envelope[ReplyGenerated], delivery: Delivery, record: DeliveryRecord
    ) -> None:
        reply = env.data
        out_id = domain.outcome_id(reply.reply_id, reply.chunk_index, record.state)
        at = record.at or datetime.now(UTC)
        event: ReplyDelivered | ReplyDeliveryFailed
        if record.state == "delivered":
            event = ReplyDelivered(
                reply_id=reply.reply_id,
                platform=reply.platform,
                delivered_at=at,
                platform_message_id=record.platform_message_id,
                attempts=max(1, record.attempts),
                chunk_index=reply.chunk_index,
                app=reply.app,
                chat_id=reply.chat_id,
            )
        else:
            event = ReplyDeliveryFailed(
                reply_id=reply.reply_id,
                platform=reply.platform,
                reason=record.reason or record.state,
                code=record.code,
                ambiguous=record.state == "ambiguous",
                attempts=max(1, record.attempts),
                chunk_index=reply.chunk_index,
                app=reply.app,
                chat_id=reply.chat_id,
            )
        await self._publish(
            delivery,
            subjects.delivery(record.state, reply.platform, reply.tenant),
            event,
            out_id,
            env,
        )
        if record.state == "ambiguous":
            audit = AuditRecorded(
                actor="notifier",
                action="delivery.ambiguous",
                target=reply.reply_id,
                outcome=OUTCOME_AMBIGUOUS,
                tenant=reply.tenant,
                detail=record.reason or "",
                labels={"platform": reply.platform, "app": reply.app, "chat": reply.chat_id},
            )
            await self._publish(
                delivery,
                subjects.audit(reply.tenant, "delivery"),
                audit,
                derive_msg_id(out_id, "audit"),
                env,
            )
        elif record.state == "failed":
            alert = AlertRaised(
                level="error",
                source="notifier",
                title=f"reply could not be delivered to {reply.platform}",
                detail=f"reply {reply.reply_id} to {reply.chat_id}: {record.reason}",
                tenant=reply.tenant,
                labels={"app": reply.app, "code": record.code or ""},
                dedupe_key=f"notifier:failed:{reply.app}:{record.code}",
            )
            await self._publish(
                delivery,
                subjects.alert("error", "notifier"),
                alert,
                derive_msg_id(out_id, "alert"),
                env,
            )

    async def _publish(
        self, delivery: Delivery, subject: str, event: Any, out_id: str, env: Envelope[Any]
    ) -> None:
        out = wire.make_envelope(
            event,
            id=out_id,
            source=SOURCE,
            tenant=env.tenant,
            conversation_id=env.conversation_id,
            correlation_id=env.correlation_id or env.id,
        )
        await delivery.publish_envelope(subject, out)

    # --- streamed replies -----------------------------------------------------------------

    async def _stream(
        self,
        env: Envelope[ReplyGenerated],
        delivery: Delivery,
        channel: Channel,
        stream: CardStream,
    ) -> None:
        """Chunks update one card; non-final updates are best effort (throttled, skipped when
        stale), the final one is delivered like any reply and recorded."""
        reply = env.data
        final_key = domain.record_key("reply", reply.reply_id, str(reply.chunk_index))
        if reply.final:
            record, _ = await self.ledger.open(final_key)
            if record.state in domain.TERMINAL:
                await self._publish_outcome(env, delivery, record)
                return
        try:
            card = await self._open_card(reply, channel, stream, delivery)
        except RetryLater:
            if reply.final:
                raise
            SKIPPED_CHUNKS.inc()  # another chunk is creating the card, or the platform is busy
            return
        if card.state != "delivered" or card.card_id is None:
            if reply.final:
                await self._publish_outcome(env, delivery, card)
            return
        interval = self.settings.stream_min_interval_s
        seq = await self.streams.claim(reply.reply_id, reply.chunk_index, reply.final, interval)
        if seq == 0:
            SKIPPED_CHUNKS.inc()
            return
        if not reply.final:
            await self._update_card(reply, stream, card.card_id, seq)
            return
        async with delivery.keepalive():
            result = await self._finish_card(reply, stream, card.card_id, seq)
        record, revision = await self.ledger.open(final_key)
        now = datetime.now(UTC)
        if isinstance(result, Delivered):
            record = DeliveryRecord(
                state="delivered",
                attempts=record.attempts + 1,
                platform_message_id=card.platform_message_id,
                card_id=card.card_id,
                at=now,
            )
        elif isinstance(result, Rejected):
            record = DeliveryRecord(
                state="failed",
                attempts=record.attempts + 1,
                reason=result.reason,
                code=result.code,
                card_id=card.card_id,
                at=now,
            )
        else:
            raise RetryLater(f"final stream update of {reply.reply_id}: {result}")
        try:
            await self.ledger.write(final_key, record, revision)
        except Fenced as exc:
            raise RetryLater(str(exc)) from exc
        OUTCOMES.labels(channel.platform, "stream", record.state).inc()
        await self._publish_outcome(env, delivery, record)

    @property
    def _in_flight_s(self) -> float:
        """How long one send or card update can be waiting for the platform: it may fetch a
        token first, so two HTTP exchanges, and some slack. Under ``ack_wait`` (30 s) with the
        default timeout, so a dead worker's send is found stale when its message returns."""
        return 2 * self.settings.http_timeout_s + 5

    async def _update_card(
        self, reply: ReplyGenerated, stream: CardStream, card_id: str, seq: int
    ) -> None:
        """A non-final update: skipped when another update of the card is in flight on a
        platform that would not refuse it for being older."""
        if stream.ordered:
            result = await stream.update(card_id, reply.text, seq)
        else:
            if await self.streams.take_turn(reply.reply_id, seq, self._in_flight_s) != "go":
                SKIPPED_CHUNKS.inc()
                return
            try:
                result = await stream.update(card_id, reply.text, seq)
            finally:
                await self.streams.end_turn(reply.reply_id, seq)
        if not isinstance(result, Delivered):
            log.info("stream update of %s skipped: %s", reply.reply_id, result)

    async def _finish_card(
        self, reply: ReplyGenerated, stream: CardStream, card_id: str, seq: int
    ) -> SendResult:
        """The final text, sent after any update still in flight, so it is never overwritten
        by an older one."""
        if stream.ordered:
            return await stream.finish(card_id, reply.text, seq)
        while True:
            # Polled: the update in flight ends within its HTTP timeout, or its turn expires.
            turn = await self.streams.take_turn(reply.reply_id, seq, self._in_flight_s)
            if turn != "busy":
                break
            await asyncio.sleep(TURN_POLL_S)
        if turn == "stale":
            # The final chunk was claimed again (redelivered): that handling sends it.
            raise RetryLater(f"final chunk of {reply.reply_id} claimed again")
        try:
            return await stream.finish(card_id, reply.text, seq)
        finally:
            await self.streams.end_turn(reply.reply_id, seq)

    async def _open_card(
        self, reply: ReplyGenerated, channel: Channel, stream: CardStream, delivery: Delivery
    ) -> DeliveryRecord:
        """The streaming card of a reply, created and shown once (the card id is recorded
        before the message showing it is sent, so a retry shows the same card). A chunk that
        comes while another is showing the card is skipped (a final one retried later)."""
        key = domain.record_key("stream", reply.reply_id)
        record, revision = await self.ledger.open(key)
        if record.state in domain.TERMINAL:
            return record
        card_id = record.card_id
        if card_id is None:
            card_id, result = await stream.create(reply.reply_id, reply.text, reply.title)
            if card_id is None:
                if isinstance(result, Rejected):
                    failed = msgspec.structs.replace(
                        record,
                        state="failed",
                        reason=result.reason,
                        code=result.code,
                        at=datetime.now(UTC),
                    )
                    try:
                        await self.ledger.write(key, failed, revision)
                    except Fenced as exc:
                        raise RetryLater(str(exc)) from exc
                    return failed
                raise RetryLater(f"creating the streaming card: {result}")
            try:
                await self.ledger.write(
                    key, msgspec.structs.replace(record, card_id=card_id), revision
                )
            except Fenced as exc:
                raise RetryLater(str(exc)) from exc
        message = stream.message(card_id, reply.text, reply.title)
        message = dataclasses.replace(message, idempotency_key=reply.reply_id)
        showing = dataclasses.replace(channel, send=stream.show, idempotent=stream.show_idempotent)
        return await self._deliver(key, showing, message, delivery, kind="stream")

    # --- alerts ---------------------------------------------------------------------------

    async def alert(self, env: Envelope[AlertRaised], delivery: Delivery) -> None:
        alert = env.data
        config = self.config()
        routes = config.alerts.get(alert.level, ())
        if not routes:
            log.info("no alert route for level %s: %s dropped", alert.level, alert.title)
            return
        window_s = self.settings.alert_window_s
        fold = domain.record_key(domain.fold_key(alert))
        joined = await self.window.join(fold, env.id, window_s)
        if joined.role == "repeat":
            return
        if joined.role == "first":
            message, stage = domain.alert_message(alert), "first"
        else:
            async with delivery.keepalive():
                await asyncio.sleep(joined.left_s)
            repeats = await self.window.close(fold, joined.window_id, window_s)
            if repeats == 0:
                return
            message = domain.alert_message(alert, repeats=repeats, window_s=window_s)
            stage = "summary"
        retry: list[str] = []
        for index, route in enumerate(routes):
            try:
                channel = alert_channel(route, config, self.adapters, self.settings)
            except NoRoute as exc:
                log.error("alert route %d of level %s: %s", index, alert.level, exc)
                continue
            key = domain.record_key("alert", stage, env.id, str(index))
            try:
                await self._deliver(key, channel, message, delivery, kind="alert")
            except RetryLater as exc:
                retry.append(f"route {index}: {exc}")
        if retry:
            # Routes already delivered are recorded in the ledger and are not sent again.
            raise RetryLater("; ".join(retry))
