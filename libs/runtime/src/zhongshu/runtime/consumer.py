"""The consume loop every service runs: fetch in batches, handle, publish with ``publish_async``,
gather the PubAcks, then ack; on failure nak with backoff, and after ``max_deliver`` attempts
dead-letter the message and raise an alert.

Built directly on nats-py rather than FastStream: FastStream's per-message handlers measured
0.44x the raw pipelined hop (below the 0.5x target) and its batch mode stranded 3-8 % of
messages until ``ack_wait``; this loop keeps FastStream's shape (typed handler functions,
decoders, lifespan) and the raw hop's speed. See bench/hop.py for the figures. It pulls with
runtime.pull rather than nats-py's ``PullSubscription.fetch``, whose per-call Python cost
(a task and ``wait_for`` per message, two requests per busy fetch) was most of the loop's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from nats.js.client import JetStreamContext
from opentelemetry.trace import SpanKind, StatusCode

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects, traces
from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.streams import ALERTS
from zhongshu.runtime import metrics, once, telemetry
from zhongshu.runtime.bus import Publisher
from zhongshu.runtime.errors import PermanentError
from zhongshu.runtime.once import Claims
from zhongshu.runtime.pull import Puller

log = logging.getLogger("zhongshu.runtime.consumer")

T = TypeVar("T")
Decoder = Callable[[bytes], T]
Handler = Callable[[T, "Delivery"], Awaitable[None]]

# Longest error text kept in a DLQ header: enough to diagnose, short enough for a header.
MAX_ERROR_TEXT = 1_000


@dataclass(frozen=True, kw_only=True)
class ConsumerSpec(Generic[T]):
    """One durable pull consumer and the handler that processes its messages."""

    stream: str
    durable: str
    subjects: tuple[str, ...]
    handler: Handler[T]
    decode: Decoder[T]
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    ack_wait_s: float = 30.0
    batch: int = 100
    # 1: handlers run one after another inside a fetched batch and the batch's publishes are
    # pipelined (fastest for quick handlers); N > 1: up to N handlers in flight (I/O-bound work).
    concurrency: int = 1
    max_ack_pending: int = 20_000
    # Short fetches while busy keep latency low; one long poll for a single message while idle
    # keeps an idle service near 0 % CPU and still wakes on the first message.
    busy_fetch_timeout_s: float = 0.02
    idle_fetch_timeout_s: float = 1.0
    # Claim each event (by its Nats-Msg-Id) as it is handled, so a late stored copy of an event
    # is acked without output (runtime.once): for the first consumer that acts on platform events.
    claim_once: bool = False

    def consumer_config(self) -> ConsumerConfig:
        one = len(self.subjects) == 1
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            # The server never gives up on its own: we count deliveries and dead-letter
            # ourselves, so a message whose handler crashes the process still reaches the DLQ.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            max_waiting=512,
            filter_subject=self.subjects[0] if one else None,
            filter_subjects=None if one else list(self.subjects),
        )


class DeliveriesExceeded(Exception):
    """The message was delivered more often than ``max_deliver`` without being acked (the
    handler crashed its process or outlived ``ack_wait`` each time)."""


@dataclass(eq=False)
class Delivery:
    """One delivered message, handed to the handler with its data: publish outputs through it
    so the input is acked only after every output's PubAck."""

    msg: Msg
    publisher: Publisher
    ack_wait_s: float
    pending: list[asyncio.Future[PubAck]] = field(default_factory=list)
    error: BaseException | None = None
    duplicate: bool = False  # another stored copy of the same event was claimed first (once.py)
    # Outputs kept back while the input's claim is in flight (claim_once), sent by ``release``.
    held: list[tuple[str, bytes, str, Mapping[str, str] | None]] | None = None

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def headers(self) -> Mapping[str, str]:
        return self.msg.headers or {}

    @property
    def num_delivered(self) -> int:
        """Read from the ack subject directly: ``msg.metadata`` parses every field and a
        timestamp (~8 us) and this is needed for every message."""
        try:
            return int(self._ack_tokens()[0])
        except (IndexError, ValueError):
            return int(self.msg.metadata.num_delivered)

    @property
    def stream_sequence(self) -> int:
        try:
            return int(self._ack_tokens()[1])
        except (IndexError, ValueError):
            return int(self.msg.metadata.sequence.stream)

    def _ack_tokens(self) -> list[str]:
        """``<delivered>.<stream seq>.…`` of the ack subject: ``$JS.ACK.<stream>.<consumer>.…``
        (9 tokens), or the v2 form with domain and account hash before the stream (12)."""
        tokens = (self.msg.reply or "").split(".")
        return tokens[4:] if len(tokens) == 9 else tokens[6:]

    async def publish(
        self, subject: str, payload: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send now; the PubAck is awaited (with the rest of the batch) before the input's ack.
        While the input's claim is unsettled, the output waits for it (``release``)."""
        if self.held is not None:
            self.held.append((subject, payload, msg_id, headers))
            return
        self.pending.append(
            await self.publisher.publish_async(subject, payload, msg_id=msg_id, headers=headers)
        )

    async def release(self) -> None:
        """Send the outputs held while the claim was unsettled, unless the input turned out a
        duplicate or failed (then they are dropped: a redelivery makes them again)."""
        held, self.held = self.held or [], None
        if self.duplicate or self.error is not None:
            return
        for subject, payload, msg_id, headers in held:
            await self.publish(subject, payload, msg_id=msg_id, headers=headers)

    async def publish_envelope(self, subject: str, envelope: wire.Envelope[Any]) -> None:
        """Publish an event; its envelope id is the ``Nats-Msg-Id`` (derive it from the input's
        id with ``contracts.ids.derive_msg_id`` so a redelivery produces the same id)."""
        await self.publish(subject, wire.encode(envelope), msg_id=envelope.id)

    async def in_progress(self) -> None:
        """Tell JetStream the work goes on, resetting ``ack_wait``."""
        await self.msg.in_progress()

    @contextlib.asynccontextmanager
    async def keepalive(self) -> AsyncIterator[None]:
        """Keep the message alive for the duration of a long step (an LLM call): an
        ``in_progress`` every ``ack_wait / 3``. A timer, not a task: almost every step ends
        before the first beat is due and then costs one timer (a task per step, with its
        event and cancellation, was ~4 % of the agent's CPU per cached answer under py-spy)."""
        loop = asyncio.get_running_loop()
        interval = self.ack_wait_s / 3
        beats: set[asyncio.Task[None]] = set()
        timer: asyncio.TimerHandle | None = None

        def beat() -> None:
            nonlocal timer
            task = loop.create_task(self._beat())
            beats.add(task)
            task.add_done_callback(beats.discard)
            timer = loop.call_later(interval, beat)

        timer = loop.call_later(interval, beat)
        try:
            yield
        finally:
            timer.cancel()  # the newest: each beat replaced it before returning
            for task in list(beats):
                task.cancel()

    async def _beat(self) -> None:
        try:
            await self.msg.in_progress()
        except Exception as exc:  # the next beat comes at its time; ack_wait decides
            log.warning("keepalive of %s failed: %r", self.msg.subject, exc)


class ConsumerLoop(Generic[T]):
    """Runs one :class:`ConsumerSpec` until stopped."""

    def __init__(
        self,
        spec: ConsumerSpec[T],
        *,
        service: str,
        js: JetStreamContext,
        publisher: Publisher,
    ) -> None:
        self.spec = spec
        self.service = service
        self._js = js
        self._publisher = publisher
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max(1, spec.concurrency))
        self._puller: Puller | None = None
        labels = (service, spec.durable)
        self._handled = metrics.HANDLED.labels(*labels)
        self._failed = metrics.FAILED.labels(*labels)
        self._dead = metrics.DEAD_LETTERED.labels(*labels)
        self._duplicates = metrics.DUPLICATES.labels(*labels)
        self._claims: Claims | None = None
        self._latency = metrics.HANDLER_SECONDS.labels(*labels)
        self._span_name = f"process {spec.durable}"
        self._tracer = telemetry.tracer()
        self._span_attributes = {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": spec.durable,
            traces.SERVICE: service,
        }

    @property
    def bound(self) -> bool:
        return self._puller is not None

    async def bind(self) -> None:
        """Create or update the durable consumer (streams must already exist), then bind."""
        await self._js.add_consumer(self.spec.stream, self.spec.consumer_config())
        # The loop's own pulls (runtime.pull) on the JetStream context's connection and API
        # prefix: nats-py exposes neither publicly.
        puller = Puller(
            self._js._nc, self.spec.stream, self.spec.durable, api_prefix=self._js._prefix
        )
        await puller.subscribe()
        self._puller = puller
        if self.spec.claim_once:
            self._claims = Claims(await once.open_bucket(self._js), self._publisher)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consume:{self.spec.durable}")

    async def stop(self, timeout_s: float) -> None:
        """Stop fetching, let in-flight handlers finish and ack (up to ``timeout_s``)."""
        self._stopping.set()
        if self._task is not None:
            await self._finish(timeout_s)
        if self._puller is not None:
            # Delivered to the inbox after the last fetch (a pull the loop had given up on):
            # hand them back now rather than leave them to ``ack_wait``.
            left = await self._puller.close()
            await asyncio.gather(*(m.nak() for m in left), return_exceptions=True)

    async def _finish(self, timeout_s: float) -> None:
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.warning(
                "consumer %s did not drain in %.0fs; unfinished messages will be redelivered",
                self.spec.durable,
                timeout_s,
            )
            self._task.cancel()
            for task in self._inflight:
                task.cancel()

    async def refresh_metrics(self) -> None:
        if self._puller is None:
            return
        info = await self._js.consumer_info(self.spec.stream, self.spec.durable)
        labels = (self.service, self.spec.durable)
        metrics.CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
        metrics.CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        puller = self._puller
        assert puller is not None
        idle = True
        while not self._stopping.is_set():
            want = self.spec.batch
            if self.spec.concurrency > 1:
                await self._slots.acquire()  # at least one slot free before asking for more
                self._slots.release()
                want = min(want, self._free_slots())
            try:
                if idle:
                    msgs = await puller.fetch(1, self.spec.idle_fetch_timeout_s)
                else:
                    # Returns what is stored now, or the first messages within the timeout.
                    msgs = await puller.fetch(want, self.spec.busy_fetch_timeout_s, no_wait=True)
            except (TimeoutError, nats.errors.TimeoutError):
                idle = True
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                break
            except Exception as exc:  # reconnecting, server restart: wait and fetch again
                log.warning("fetch on %s failed: %r", self.spec.durable, exc)
                await asyncio.sleep(0.5)
                continue
            idle = False
            if self._stopping.is_set():
                # Fetched after the stop: hand them straight back for another replica.
                await asyncio.gather(*(m.nak() for m in msgs), return_exceptions=True)
                break
            if self.spec.concurrency == 1:
                await self._process(msgs)
            else:
                for msg in msgs:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._process_one(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _free_slots(self) -> int:
        return max(1, self.spec.concurrency - len(self._inflight))

    async def _process_one(self, msg: Msg) -> None:
        try:
            await self._process([msg])
        finally:
            self._slots.release()

    async def _process(self, msgs: list[Msg]) -> None:
        started = time.perf_counter()
        deliveries = [Delivery(m, self._publisher, self.spec.ack_wait_s) for m in msgs]
        claims: list[once.Pending] = []
        if self._claims is not None:
            claims = await self._claim(deliveries)
        for delivery in deliveries:
            if delivery.error is None:
                await self._handle(delivery)
        if self._claims is not None:
            await self._claims.settle(claims)
            for delivery in deliveries:
                if delivery.duplicate:
                    self._duplicates.inc()
                    if delivery.held is None:
                        log.warning(
                            "%s: %s was a copy of an event claimed earlier, but not marked "
                            "late; its outputs went out (their ids equal the first copy's)",
                            self.spec.durable,
                            delivery.headers.get(H.MSG_ID),
                        )
                await delivery.release()
        futures = [f for d in deliveries if d.error is None for f in d.pending]
        if futures:
            await asyncio.wait(futures)
        for delivery in deliveries:
            if delivery.error is None:
                for future in delivery.pending:
                    if future.exception() is not None:
                        delivery.error = future.exception()
                        break
            if delivery.duplicate:
                await delivery.msg.ack()
            elif delivery.error is None:
                await delivery.msg.ack()
                self._handled.inc()
            else:
                await self._fail(delivery, delivery.error)
        elapsed = time.perf_counter() - started
        for _ in deliveries:
            self._latency.observe(elapsed)

    async def _claim(self, deliveries: list[Delivery]) -> list[once.Pending]:
        """Send the batch's claims before its handlers run. An input marked as a late copy
        may repeat an event handled long ago: its outputs are held until its claim is settled
        (the claim's round trip overlaps the handlers), and dropped if it is a duplicate. A
        fresh input cannot repeat an event stored outside the stream's duplicate window, so
        its outputs go out at once and its claim is settled with them, before the ack."""
        assert self._claims is not None
        late = False
        for delivery in deliveries:
            if delivery.headers.get(H.LATE_COPY):
                delivery.held, late = [], True
        claims = await self._claims.send(deliveries)
        if late:
            await asyncio.sleep(0)  # lets the client's flusher write the claims now
        return claims

    async def _handle(self, delivery: Delivery) -> None:
        msg = delivery.msg
        with self._tracer.start_as_current_span(
            self._span_name,
            context=telemetry.extract(msg.headers),
            kind=SpanKind.CONSUMER,
            attributes={**self._span_attributes, "messaging.destination.name": msg.subject},
        ) as span:
            try:
                if delivery.num_delivered > self.spec.max_deliver:
                    raise DeliveriesExceeded(
                        f"delivered {delivery.num_delivered} times without an ack "
                        f"(max_deliver={self.spec.max_deliver})"
                    )
                try:
                    data = self.spec.decode(msg.data)
                except Exception as exc:
                    raise PermanentError(f"cannot decode message: {exc}") from exc
                if span.is_recording():
                    telemetry.describe_envelope(span, data, delivery.headers.get(H.MSG_ID))
                await self.spec.handler(data, delivery)
            except Exception as exc:
                delivery.error = exc
                span.set_status(StatusCode.ERROR, _error_text(exc)[:200])

    # ------------------------------------------------------------------ failures

    async def _fail(self, delivery: Delivery, error: BaseException) -> None:
        self._failed.inc()
        attempt = delivery.num_delivered
        final = isinstance(error, PermanentError | DeliveriesExceeded)
        final = final or attempt >= self.spec.max_deliver
        log.warning(
            "handler %s failed on %s (attempt %d/%d): %s",
            self.spec.durable,
            delivery.subject,
            attempt,
            self.spec.max_deliver,
            _error_text(error),
        )
        if final:
            try:
                await self._dead_letter(delivery, error)
                return
            except Exception as exc:  # the DLQ itself is unreachable: try again later
                log.error("could not dead-letter %s: %r", delivery.subject, exc)
        backoff = self.spec.backoff_s
        delay = backoff[min(attempt, len(backoff)) - 1] if backoff else 0
        await delivery.msg.nak(delay=delay)

    async def _dead_letter(self, delivery: Delivery, error: BaseException) -> None:
        seq = delivery.stream_sequence
        text = _error_text(error)
        dlq_headers = {k: v for k, v in delivery.headers.items() if not k.startswith("Nats-")}
        dlq_headers.update(
            {
                H.DLQ_ERROR: text,
                H.DLQ_STREAM: self.spec.stream,
                H.DLQ_CONSUMER: self.spec.durable,
                H.DLQ_SUBJECT: delivery.subject,
                H.DLQ_SEQUENCE: str(seq),
                H.DLQ_DELIVERIES: str(delivery.num_delivered),
                H.DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
            }
        )
        dlq_id = f"dlq:{self.spec.stream}:{self.spec.durable}:{seq}"
        await self._publisher.publish(
            subjects.dlq(self.spec.stream, self.spec.durable),
            delivery.msg.data,
            msg_id=dlq_id,
            headers=dlq_headers,
        )
        await self._alert_dead_letter(delivery, dlq_id, seq, text)
        await delivery.msg.term()
        self._dead.inc()
        log.error("dead-lettered %s seq %d: %s", delivery.subject, seq, text)

    async def _alert_dead_letter(
        self, delivery: Delivery, dlq_id: str, seq: int, text: str
    ) -> None:
        if self.spec.stream == ALERTS.name:
            # An alert about an alert that could not be delivered would come back to the same
            # consumer and could cycle; the DLQ entry, the metric and the log line stand.
            return
        alert = wire.make_envelope(
            AlertRaised(
                level="error",
                source=self.service,
                title=f"message dead-lettered by {self.spec.durable}",
                detail=(
                    f"{delivery.subject} (stream {self.spec.stream} seq {seq}) failed "
                    f"{delivery.num_delivered} time(s): {text}"
                ),
                labels={"stream": self.spec.stream, "consumer": self.spec.durable},
                dedupe_key=dlq_id,
            ),
            id=f"alert:{dlq_id}",
            source=f"zhongshu/{self.service}",
            tenant="",
        )
        await self._publisher.publish(
            subjects.alert("error", self.service), wire.encode(alert), msg_id=alert.id
        )


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\r", " ").replace("\n", " ")
    return text[:MAX_ERROR_TEXT]
