"""The notifier's two flows, replies and alerts, over the resources opened at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from prometheus_client import Counter

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AlertRaised,
    AlertStateChanged,
    AuditRecorded,
    ReplyDelivered,
    ReplyDeliveryFailed,
    ReplyGenerated,
    alert_key,
)
from zhongshu.contracts.events.audit import OUTCOME_AMBIGUOUS
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.notifier import domain
from zhongshu.notifier.adapters.alertcards import AlertCardBook, SentCard
from zhongshu.notifier.adapters.alertwindow import AlertWindow
from zhongshu.notifier.adapters.ledger import Fenced, Ledger
from zhongshu.notifier.adapters.ratelimit import Confirm, SlidingWindowLimiter
from zhongshu.notifier.adapters.results import Delivered, Rejected, SendResult
from zhongshu.notifier.adapters.streamstate import BUSY, StreamState
from zhongshu.notifier.channels import (
    Adapters,
    CardStream,
    Channel,
    NoRoute,
    alert_channel,
    card_update_channel,
    for_part,
    reply_channel,
)
from zhongshu.notifier.delivery import PENDING, Busy, RetryLater, deliver_once
from zhongshu.notifier.domain import DeliveryRecord
from zhongshu.notifier.keyedlocks import Held, KeyedLocks
from zhongshu.notifier.message import Outgoing
from zhongshu.notifier.redaction import SecretGuard
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime import Delivery
from zhongshu.runtime.hubconfig import HubConfig

log = logging.getLogger("zhongshu.notifier")
SOURCE = "zhongshu/notifier"
# How often a final chunk looks whether another worker's card update (or the message showing
# the card) has finished: only another replica's, this one's are waited for on a lock.
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
SILENCED = Counter(
    "zhongshu_notifier_alerts_silenced_total", "Alerts not sent because their alert is silenced"
)
REDACTED = Counter(
    "zhongshu_notifier_secrets_redacted_total",
    "Outgoing messages in which a configured secret was masked",
    ("kind",),
)
SECRET_ALERT_TITLE = "a configured secret was about to be sent"


@dataclass(frozen=True)
class _Card:
    """A streamed reply's card record as the chunk that showed the card left it."""

    record: DeliveryRecord
    revision: int


@dataclass
class Notifier:
    settings: NotifierSettings
    config: Callable[[], HubConfig]
    adapters: Adapters
    ledger: Ledger
    limiter: SlidingWindowLimiter
    window: AlertWindow
    streams: StreamState
    cards: AlertCardBook
    guard: SecretGuard = dataclasses.field(default_factory=SecretGuard)
    _replies: KeyedLocks = dataclasses.field(default_factory=KeyedLocks, init=False)
    _alerts: KeyedLocks = dataclasses.field(default_factory=KeyedLocks, init=False)

    # --- replies --------------------------------------------------------------------------

    async def reply(self, env: Envelope[ReplyGenerated], delivery: Delivery) -> None:
        reply, secrets_at = self.guard.reply(self.config(), env.data)
        if secrets_at:
            REDACTED.labels("reply").inc()
            env = msgspec.structs.replace(env, data=reply)
            where = f"reply {reply.reply_id} to {reply.platform} chat {reply.chat_id}"
            await self._secret_seen(env, delivery, secrets_at, where, tenant=reply.tenant)
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
        # A redelivered message most likely has a record: read first, so that it does not
        # wait for a rate-limit slot it will not use.
        found = await self.ledger.read(key) if delivery.num_delivered > 1 else None
        record, _ = await self._deliver(key, channel, message, delivery, kind="reply", found=found)
        await self._publish_outcome(env, delivery, record)

    async def _deliver(
        self,
        key: str,
        channel: Channel,
        message: Outgoing,
        delivery: Delivery,
        *,
        kind: str,
        found: tuple[DeliveryRecord, int] | None = None,
        start: DeliveryRecord = PENDING,
        leave_sending: Callable[[], bool] | None = None,
    ) -> tuple[DeliveryRecord, int]:
        """The record driven to a terminal state, and its revision (see ``deliver_once`` for
        ``leave_sending``)."""

        async def wait_slot() -> Confirm:
            # Every bucket of the send in one take (one Redis call), all or none.
            waited, confirm = await self.limiter.take_all(channel.limits)
            RATE_WAIT.inc(waited)
            return confirm

        async def send_part(part: str, offset: int) -> SendResult:
            return await channel.send(for_part(message, part, offset))

        try:
            async with delivery.keepalive():
                record, revision = await deliver_once(
                    self.ledger,
                    key,
                    text=message.text,
                    idempotent=channel.idempotent,
                    max_bytes=channel.max_bytes,
                    send_part=send_part,
                    wait_slot=wait_slot,
                    in_flight_s=self._in_flight_s,
                    found=found,
                    start=start,
                    leave_sending=leave_sending,
                )
        except Fenced as exc:
            raise Busy(str(exc)) from exc
        OUTCOMES.labels(channel.platform, kind, record.state).inc()
        if record.state != "delivered":
            log.warning("%s: %s (%s)", channel.description, record.state, record.reason)
        return record, revision

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
        stale or while another chunk of the reply is handled), the final one is delivered like
        any reply and recorded in the card's record.

        Within a process the chunks of a reply are handled one at a time (a lock per reply):
        a non-final chunk that finds its reply busy is skipped, the final one waits for it
        here rather than going back to the broker for a backoff, so the final text follows
        the model's last token."""
        reply = env.data
        if not reply.final:
            async with self._replies.hold(reply.reply_id, wait=False) as held:
                if held is not None:
                    await self._stream_chunk(reply, channel, stream, delivery, held)
                else:
                    SKIPPED_CHUNKS.inc()
            return
        async with delivery.keepalive(), self._replies.hold(reply.reply_id) as held:
            assert held is not None  # waited for
            record = await self._finish_stream(reply, channel, stream, delivery, held)
        if record is not None:
            await self._publish_outcome(env, delivery, record)

    @property
    def _in_flight_s(self) -> float:
        """How long one send or card update can be waiting for the platform: it may fetch a
        token first, so two HTTP exchanges, and some slack. Under ``ack_wait`` (30 s) with the
        default timeout, so a dead worker's send is found stale when its message returns."""
        return 2 * self.settings.http_timeout_s + 5

    async def _stream_chunk(
        self,
        reply: ReplyGenerated,
        channel: Channel,
        stream: CardStream,
        delivery: Delivery,
        held: Held,
    ) -> None:
        """A non-final chunk: the card shown if it is not yet, else its text updated, when the
        card's turn is free and the last update is old enough.

        When the final chunk already waits for this one, the card's record is left for it to
        write (``sending`` becomes ``delivered`` with the final text, in one write) where
        showing the card again is harmless: a worker that dies in between leaves a record that
        is found stale and shown again, with the same ``uuid``."""
        opened = await self._open_card(
            reply, channel, stream, delivery, final=False, leave_sending=lambda: held.awaited
        )
        if opened is None:
            SKIPPED_CHUNKS.inc()  # another worker is showing the card, or the platform is busy
            return
        card, revision, shown_now = opened
        held.memo = _Card(card, revision)
        if card.state != "delivered" or card.finished or card.card_id is None:
            return
        # A card this chunk just showed holds its text already: recorded as applied (so the
        # throttle and the order count it), not sent again.
        seq = await self.streams.claim(
            reply.reply_id,
            reply.chunk_index,
            False,
            self.settings.stream_min_interval_s,
            turn_s=self._in_flight_s,
            take_turn=not shown_now,
        )
        if seq <= 0:
            SKIPPED_CHUNKS.inc()
            return
        if shown_now:
            return
        try:
            result = await stream.update(card.card_id, reply.text, seq)
        finally:
            await self.streams.end_turn(reply.reply_id, seq)
        if not isinstance(result, Delivered):
            log.info("stream update of %s skipped: %s", reply.reply_id, result)

    async def _finish_stream(
        self,
        reply: ReplyGenerated,
        channel: Channel,
        stream: CardStream,
        delivery: Delivery,
        held: Held,
    ) -> DeliveryRecord | None:
        """The final text on the card and the stream closed, recorded once in the card's
        record: the outcome to publish (None: nothing to report, a newer final was applied).
        The card's record as the chunk before left it here, else as read (or written when
        this chunk shows the card: its ``delivered`` waits for the final text)."""
        key = domain.record_key("stream", reply.reply_id)
        memo, held.memo = held.memo, None
        if isinstance(memo, _Card):
            card, revision = memo.record, memo.revision
        else:
            opened = await self._open_card(
                reply, channel, stream, delivery, final=True, leave_sending=lambda: True
            )
            assert opened is not None  # a final chunk waits rather than skip
            card, revision, _ = opened
        if card.finished or card.state != "delivered" or card.card_id is None:
            return card  # handled before (redelivered), or the card could not be shown
        seq = await self._final_turn(reply)
        if seq == 0:
            SKIPPED_CHUNKS.inc()
            return None
        result: SendResult | None = None
        try:
            result = await stream.finish(card.card_id, reply.text, seq)
        finally:
            # The card's last update: once it went through, any later chunk is older and
            # skipped anyway, so the turn is only given back when the final is tried again.
            if not isinstance(result, Delivered):
                await self.streams.end_turn(reply.reply_id, seq)
        now = datetime.now(UTC)
        replace = msgspec.structs.replace
        if isinstance(result, Delivered):
            record = replace(card, finished=True, at=now)
        elif isinstance(result, Rejected):
            record = replace(
                card, state="failed", reason=result.reason, code=result.code, finished=True, at=now
            )
        else:
            # The card is shown: say so (its record may still say ``sending``), so the retry
            # does not wait for a send that is over.
            with contextlib.suppress(Fenced):
                await self.ledger.write(key, card, revision)
            raise RetryLater(f"final stream update of {reply.reply_id}: {result}")
        try:
            await self.ledger.write(key, record, revision)
        except Fenced as exc:
            raise RetryLater(str(exc)) from exc
        OUTCOMES.labels(channel.platform, "stream", record.state).inc()
        return record

    async def _final_turn(self, reply: ReplyGenerated) -> int:
        """The final chunk's sequence, once no other update of the card is in flight (another
        replica's: within this one the reply's lock orders its chunks). Polled: the update in
        flight ends within its HTTP timeout, or its turn expires."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 2 * self._in_flight_s
        while True:
            seq = await self.streams.claim(
                reply.reply_id,
                reply.chunk_index,
                True,
                self.settings.stream_min_interval_s,
                turn_s=self._in_flight_s,
            )
            if seq != BUSY:
                return seq
            if loop.time() > give_up:
                raise RetryLater(f"an update of the card of {reply.reply_id} never ended")
            await asyncio.sleep(TURN_POLL_S)

    async def _open_card(
        self,
        reply: ReplyGenerated,
        channel: Channel,
        stream: CardStream,
        delivery: Delivery,
        *,
        final: bool,
        leave_sending: Callable[[], bool],
    ) -> tuple[DeliveryRecord, int, bool] | None:
        """The streaming card of a reply, created and shown once: (its record, the record's
        revision, whether this call showed it). The card id goes into the record with the
        claim to show it (one write), so a retry shows the same card. While another worker is
        showing it, a non-final chunk gets None, a final one waits for the outcome."""
        key = domain.record_key("stream", reply.reply_id)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 2 * self._in_flight_s
        found = await self.ledger.read(key)
        while True:
            if found is not None and found[0].state in domain.TERMINAL:
                return (*found, False)
            in_flight = found is not None and domain.in_flight(
                found[0], now=datetime.now(UTC), in_flight_s=self._in_flight_s
            )
            if not in_flight:
                try:
                    return await self._show_card(
                        key, found, reply, channel, stream, delivery, leave_sending
                    )
                except Busy:
                    pass  # claimed by another worker meanwhile
                except RetryLater:
                    if final:
                        raise
                    return None  # the platform is busy: a later chunk shows the card
            if not final:
                return None
            if loop.time() > give_up:
                raise RetryLater(f"the card of {reply.reply_id} is still being shown")
            await asyncio.sleep(TURN_POLL_S)
            found = await self.ledger.read(key)

    async def _show_card(
        self,
        key: str,
        found: tuple[DeliveryRecord, int] | None,
        reply: ReplyGenerated,
        channel: Channel,
        stream: CardStream,
        delivery: Delivery,
        leave_sending: Callable[[], bool],
    ) -> tuple[DeliveryRecord, int, bool]:
        card_id = found[0].card_id if found is not None else None
        if card_id is None:
            # Created before its record: a worker that dies in between leaves a card nobody
            # sees, never one shown twice.
            card_id, result = await stream.create(reply.reply_id, reply.text, reply.title)
            if card_id is None:
                if not isinstance(result, Rejected):
                    raise RetryLater(f"creating the streaming card: {result}")
                failed = DeliveryRecord(
                    state="failed", reason=result.reason, code=result.code, at=datetime.now(UTC)
                )
                return (*await self._record_card(key, found, failed), False)
        showed = False
        show = stream.show

        async def show_once(message: Outgoing) -> SendResult:
            nonlocal showed
            result = await show(message)
            showed = isinstance(result, Delivered)
            return result

        message = stream.message(card_id, reply.text, reply.title)
        message = dataclasses.replace(message, idempotency_key=reply.reply_id)
        showing = dataclasses.replace(channel, send=show_once, idempotent=stream.show_idempotent)
        if found is not None and found[0].card_id is None:
            found = await self._record_card(
                key, found, msgspec.structs.replace(found[0], card_id=card_id)
            )
        record, revision = await self._deliver(
            key,
            showing,
            message,
            delivery,
            kind="stream",
            found=found,
            start=DeliveryRecord(state="pending", card_id=card_id),
            leave_sending=leave_sending,
        )
        return record, revision, showed

    async def _record_card(
        self, key: str, found: tuple[DeliveryRecord, int] | None, record: DeliveryRecord
    ) -> tuple[DeliveryRecord, int]:
        """Write the card's record over the one read, or create it; :class:`Busy` when
        another worker wrote it first."""
        if found is None:
            record, revision, created = await self.ledger.claim(key, record)
            if not created:
                raise Busy(f"delivery record {key} was created by another worker")
            return record, revision
        try:
            return record, await self.ledger.write(key, record, found[1])
        except Fenced as exc:
            raise Busy(str(exc)) from exc

    # --- secrets --------------------------------------------------------------------------

    async def _secret_seen(
        self,
        env: Envelope[Any],
        delivery: Delivery,
        where_configured: tuple[str, ...],
        what: str,
        *,
        tenant: str | None,
    ) -> None:
        """A message held a configured secret (masked before it is sent): a critical alert that
        says where the secret is configured, never the secret."""
        fields = ", ".join(where_configured)
        log.error("%s held a configured secret (%s): masked", what, fields)
        alert = AlertRaised(
            level="critical",
            source="notifier",
            title=SECRET_ALERT_TITLE,
            detail=f"{what} held the value of {fields}; it was sent as ***. Rotate the "
            "secret if the text came from a model or a tool.",
            tenant=tenant or None,
            labels={"configured_at": fields},
            dedupe_key=f"notifier:secret-seen:{fields}",
        )
        out_id = derive_msg_id(env.id, "secret-seen")
        await self._publish(delivery, subjects.alert("critical", "notifier"), alert, out_id, env)

    # --- alerts ---------------------------------------------------------------------------

    @property
    def _zone(self) -> tzinfo:
        name = self.settings.alert_time_zone
        return UTC if name.upper() == "UTC" else ZoneInfo(name)

    async def alert(self, env: Envelope[AlertRaised], delivery: Delivery) -> None:
        alert = env.data
        config = self.config()
        routes = config.alerts.get(alert.level, ())
        if not routes:
            log.info("no alert route for level %s: %s dropped", alert.level, alert.title)
            return
        key = alert_key(alert)
        shown, _ = await self.cards.read(key)
        now = datetime.now(UTC)
        if domain.silenced(shown.state, shown.silenced_until, now):
            SILENCED.inc()
            log.info("alert %s is silenced until %s: not sent", key, shown.silenced_until)
            return
        window_s = self.settings.alert_window_s
        fold = domain.record_key(domain.fold_key(alert))
        joined = await self.window.join(fold, env.id, window_s)
        if joined.role == "repeat":
            return
        repeats = 0
        if joined.role == "first":
            stage = "first"
        else:
            async with delivery.keepalive():
                await asyncio.sleep(joined.left_s)
            repeats = await self.window.close(fold, joined.window_id, window_s)
            if repeats == 0:
                return
            stage = "summary"
        # A repeat of an alert someone acknowledged says so, and offers what still applies;
        # after a resolution, or once a silence is over, it is raised anew.
        state = "acknowledged" if shown.state == "acknowledged" else "raised"
        status = shown.status if state == "acknowledged" else ""
        message = domain.alert_message(
            alert, repeats=repeats, window_s=window_s, state=state, status=status
        )
        message, found = self.guard.message(config, message)
        if found:
            REDACTED.labels("alert").inc()
            await self._secret_seen(env, delivery, found, f"alert {key}", tenant=alert.tenant)
        retry: list[str] = []
        for index, route in enumerate(routes):
            try:
                channel = alert_channel(route, config, self.adapters, self.settings)
            except NoRoute as exc:
                log.error("alert route %d of level %s: %s", index, alert.level, exc)
                continue
            record_key = domain.record_key("alert", stage, env.id, str(index))
            # The record key names the send on the platform too (Feishu's uuid, DingTalk's
            # outTrackId); only an app's chat can carry buttons that call back.
            outgoing = dataclasses.replace(
                message,
                idempotency_key=record_key,
                actions=message.actions if channel.cards is not None else (),
            )
            try:
                record, _ = await self._deliver(
                    record_key, channel, outgoing, delivery, kind="alert"
                )
                if channel.cards is not None and record.state == "delivered":
                    drawn = (state, status)
                    await self._remember_card(
                        key, channel, record, alert, outgoing, drawn, delivery
                    )
            except RetryLater as exc:
                retry.append(f"route {index}: {exc}")
        if retry:
            # Routes already delivered are recorded in the ledger and are not sent again.
            raise RetryLater("; ".join(retry))

    async def _remember_card(
        self,
        key: str,
        channel: Channel,
        record: DeliveryRecord,
        alert: AlertRaised,
        sent: Outgoing,
        drawn: tuple[str, str],
        delivery: Delivery,
    ) -> None:
        """Keep the card, and what it shows (``drawn``: state and status line), for later
        updates. When the alert changed state while the card was being sent (the change's own
        updates did not know it), redraw it once, like any update: a failed redraw brings the
        alert back, and the card is found as it was first remembered."""
        target = channel.cards
        assert target is not None
        if not record.platform_message_id:
            log.warning("%s: no message id to update the alert card by", channel.description)
            return
        state, status = drawn
        sent_card = SentCard(
            platform=target.platform,
            app=target.app,
            chat=target.chat,
            ref=record.platform_message_id,
            state=state,
            status=status,
        )
        now = await self.cards.add(key, sent_card)
        card = next(c for c in now.cards if c.ref == sent_card.ref)
        shows = (card.state, card.status)
        if shows == (now.state, now.status) or (now.state, card.state) == ("raised", "raised"):
            return
        message = domain.alert_message(alert, state=now.state, status=now.status)
        redraw = dataclasses.replace(
            sent, text=message.text, actions=message.actions, colour=message.colour
        )
        update = card_update_channel(card, self.config(), self.adapters, self.settings)
        record_key = domain.record_key("alert-redraw", card.platform, card.ref, str(now.version))
        redrawn, _ = await self._deliver(record_key, update, redraw, delivery, kind="alert_update")
        log.info(
            "alert card %s sent as %s, redrawn as %s: %s",
            card.ref,
            shows[0],
            now.state,
            redrawn.state,
        )

    async def alert_state(self, env: Envelope[AlertStateChanged], delivery: Delivery) -> None:
        """Redraw every card of the alert with its new state, once per card: each update has
        its own record, so a redelivered change updates nothing twice; an older change than
        the one shown is not drawn (within a process one key's changes go one at a time)."""
        changed = env.data
        status = domain.status_line(changed, env.time, self._zone)
        async with delivery.keepalive(), self._alerts.hold(changed.key):
            shown, redraw = await self.cards.apply(
                changed.key,
                state=changed.state,
                status=status,
                silenced_until=changed.silenced_until if changed.state == "silenced" else None,
                version=(_micros(env.time), delivery.msg.metadata.sequence.stream),
            )
            if not redraw:
                log.info("alert %s: %s changes nothing shown", changed.key, changed.state)
                return
            config = self.config()
            message = domain.alert_message(changed, state=changed.state, status=status)
            message, _ = self.guard.message(config, message)
            retry: list[str] = []
            for card in shown.cards:
                try:
                    channel = card_update_channel(card, config, self.adapters, self.settings)
                except NoRoute as exc:
                    log.error("alert card %s of %s: %s", card.ref, changed.key, exc)
                    continue
                record_key = domain.record_key("alert-state", env.id, card.platform, card.ref)
                try:
                    await self._deliver(record_key, channel, message, delivery, kind="alert_update")
                except RetryLater as exc:
                    retry.append(f"card {card.ref}: {exc}")
            if retry:
                raise RetryLater("; ".join(retry))


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)
