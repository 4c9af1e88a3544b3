"""Async notifications: task and workflow-run events POSTed, signed, to the callback URLs of the
tenant's subscriptions and of the task itself, at least once per (target, event), each outcome
published on ``delivery.<delivered|failed>.callback.<tenant>`` (the delivery log).

Each (target, event) has its own record in the ``delivery_state`` ledger, so a message that
comes back because one receiver failed re-posts to that receiver only; the others find their
record delivered and are not posted again. The receiver's idempotency key is the event id
(``X-Zhongshu-Event-Id``): a crash between a POST and its record means one more POST of the same
event, never a lost one."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
import msgspec
from nats.js.client import JetStreamContext
from prometheus_client import Counter
from redis.asyncio import Redis

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.definitions import TASK_CALLBACKS_ID, subscription_secret
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    DELIVERY_TARGET_CALLBACK,
    AuditRecorded,
    CallbackDelivered,
    CallbackDeliveryFailed,
    TaskRequested,
)
from zhongshu.contracts.events.audit import OUTCOME_DENIED
from zhongshu.contracts.ids import derive_msg_id, schedule_fire_id
from zhongshu.notifier import domain
from zhongshu.notifier.adapters.callback_http import (
    CallbackPoster,
    Failed,
    Posted,
    Refused,
    redact,
    signed_headers,
)
from zhongshu.notifier.adapters.ledger import Fenced, Ledger
from zhongshu.notifier.adapters.subscriptions import SubscriptionDirectory
from zhongshu.notifier.adapters.task_callbacks import RequestBarrier, TaskCallbackStore
from zhongshu.notifier.delivery import RetryLater
from zhongshu.notifier.domain import DeliveryRecord
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.platforms.egress import live_policy
from zhongshu.runtime import Delivery, PermanentError

log = logging.getLogger("zhongshu.notifier.callbacks")
SOURCE = "zhongshu/notifier"
CALLBACK_PLATFORM = "callback"  # the <platform> token of the delivery log's subjects

# The durable consumers (see handlers.py): events for subscriptions and task callbacks, and the
# one that only remembers which tasks named callback URLs (the barrier watches it).
EVENTS_DURABLE = "notifier-callbacks"
RUNS_DURABLE = "notifier-callbacks-runs"
TARGETS_DURABLE = "notifier-callback-targets"

# How long an event whose task has no remembered callback waits for the task requests before
# it to be read (normally one consumer-info round trip), before it is retried with backoff.
BARRIER_WAIT_S = 5.0

OUTCOMES = Counter(
    "zhongshu_notifier_callbacks_total",
    "Callback POSTs by result (delivered, refused, failed: will retry, gave_up: retries over)",
    ("result",),
)
SKIPPED = Counter(
    "zhongshu_notifier_callbacks_skipped_total",
    "Events not posted to a subscription because they were stored before it was created",
)


@dataclass(frozen=True)
class CallbackRetry:
    """How long a callback is retried: the consumers' redelivery schedule. The default spreads
    12 deliveries over about 3 hours, so a receiver down for a deploy or a short outage gets
    everything; then the event is dead-lettered with an alert."""

    max_deliver: int = 12
    backoff_s: tuple[float, ...] = (
        5.0,
        15.0,
        30.0,
        60.0,
        120.0,
        300.0,
        600.0,
        1200.0,
        1800.0,
        3600.0,
        3600.0,
    )


# --- what is read of an event (pure) -------------------------------------------------------------


class _DataHead(msgspec.Struct, frozen=True):
    task_id: str | None = None
    run_id: str | None = None


class EventHead(msgspec.Struct, frozen=True):
    """The attributes routing needs. The body posted is the message's own bytes, so nothing
    else is decoded: an event type this notifier does not know yet (a newer ``v2``) is still
    forwarded to the subscriptions that match it."""

    id: str
    type: str
    source: str = ""
    tenant: str = ""
    correlation_id: str | None = msgspec.field(default=None, name="correlationid")
    data: _DataHead = msgspec.field(default_factory=_DataHead)


decode_head = msgspec.json.Decoder(EventHead).decode


def subject_tenant_matches(subject: str, tenant: str) -> bool:
    """Every subject consumed here is ``<area>.<kind>.<tenant>[...]``: an envelope whose tenant
    disagrees with its subject is not trusted with anyone's callbacks."""
    tokens = subject.split(".")
    return len(tokens) > 2 and tokens[2] == subjects.sanitize_token(tenant)


def task_of(subject: str, head: EventHead) -> str | None:
    """The task whose own callbacks an event goes to (a workflow run is a task: ``run_id ==
    task_id``); None for task requests, which open a task rather than report on one."""
    if subjects.subject_matches(subjects.ALL_TASK_EVENTS, subject):
        return head.data.task_id
    if subjects.subject_matches(subjects.ALL_WORKFLOW_RUNS, subject):
        return head.data.run_id
    return None


def firing_event(raw: bytes, fired: str, stored_at: datetime) -> tuple[str, bytes]:
    """A schedule's firing carries the schedule's body verbatim, so every firing would have the
    same event id (and receivers would drop all but the first). Post each as what it is: its
    own id and the task id the agent gives that firing (``schedule_fire_id``), at the time it
    fired."""
    env = wire.decode(raw, TaskRequested)
    firing = msgspec.structs.replace(
        env,
        id=schedule_fire_id(env.id, fired),
        time=stored_at,
        data=msgspec.structs.replace(env.data, task_id=schedule_fire_id(env.data.task_id, fired)),
    )
    return firing.id, wire.encode(firing)


def callback_urls(request: TaskRequested) -> list[str]:
    return [t.url for t in request.deliver_to if t.kind == DELIVERY_TARGET_CALLBACK and t.url]


@dataclass(frozen=True)
class Target:
    """One URL an event goes to, under one subscription id (and its secret)."""

    subscription_id: str
    url: str
    secret: str
    stage: str
    """Distinguishes this target in output ids and ledger keys."""


def outcome_id(event_id: str, target: Target, state: str) -> str:
    return derive_msg_id(event_id, f"callback.{target.stage}.{state}")


def record_key(tenant: str, target: Target, event_id: str) -> str:
    return domain.record_key("callback", tenant, target.stage, event_id)


def _url_stage(url: str) -> str:
    return "task." + hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --- the flow ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    """One event as it is posted: id, type, tenant and the exact body bytes."""

    id: str
    type: str
    tenant: str
    body: bytes
    correlation_id: str


Result = Literal["done", "retry", "interrupted"]


@dataclass(frozen=True)
class _Outcome:
    result: Result
    record: DeliveryRecord


@dataclass
class CallbackFlow:
    """The resources callbacks use, and the two handlers' logic."""

    callback_key: bytes | None
    directory: SubscriptionDirectory
    poster: CallbackPoster
    ledger: Ledger
    tasks: TaskCallbackStore
    barrier: RequestBarrier
    retry: CallbackRetry
    http: httpx.AsyncClient | None = None  # the pooled client, closed with the flow

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        settings: NotifierSettings,
        redis: Redis,
        retry: CallbackRetry,
        *,
        allow_internal: Callable[[], tuple[str, ...]] = tuple,
    ) -> CallbackFlow:
        """``allow_internal``: the internal hosts and networks callbacks may reach (the live
        ``callbacks.allow_internal``); every other internal address is refused."""
        key = settings.callback_key.get_secret_value() if settings.callback_key else ""
        if not key:
            log.warning(
                "callbacks are disabled: ZHONGSHU_CALLBACK_KEY is not set, so subscription and "
                "task callbacks cannot be signed; task and run events are read and nothing is "
                "posted"
            )
        client = CallbackPoster.client(
            timeout_s=settings.callback_timeout_s,
            connect_timeout_s=settings.callback_connect_timeout_s,
            policy=live_policy(allow_internal),
        )
        return cls(
            callback_key=key.encode() or None,
            directory=await SubscriptionDirectory.open(js, wait_s=settings.connect_timeout_s),
            poster=CallbackPoster(client, total_timeout_s=settings.callback_timeout_s),
            ledger=Ledger(await js.key_value(streams.DELIVERY_STATE_KV.bucket)),
            tasks=TaskCallbackStore(redis),
            barrier=RequestBarrier(js, stream=streams.TASKS.name, durable=TARGETS_DURABLE),
            retry=retry,
            http=client,
        )

    async def close(self) -> None:
        await self.directory.close()
        if self.http is not None:
            await self.http.aclose()

    # --- task requests: remember their own callback URLs ----------------------------------

    async def remember_targets(self, env: Envelope[TaskRequested], delivery: Delivery) -> None:
        if self.callback_key is None:
            return
        urls = callback_urls(env.data)
        if not urls:
            return
        task_id = env.data.task_id
        fired = delivery.headers.get(H.SCHEDULE_NEXT)
        if fired:  # the task id the agent gives this firing
            task_id = schedule_fire_id(task_id, fired)
        await self.tasks.remember(env.data.tenant, task_id, urls)

    # --- events: post to every target ---------------------------------------------------------

    async def on_event(self, head: EventHead, delivery: Delivery) -> None:
        if self.callback_key is None:
            return
        if not self.directory.ready:
            raise RetryLater("the subscriptions have not been read yet")
        received_at = self.barrier.now()
        if not head.tenant or not subject_tenant_matches(delivery.subject, head.tenant):
            log.warning(
                "event %s on %s names tenant %r: not posted", head.id, delivery.subject, head.tenant
            )
            return
        metadata = delivery.msg.metadata
        stored_at = metadata.timestamp
        event_id, body = head.id, delivery.msg.data
        fired = delivery.headers.get(H.SCHEDULE_NEXT)
        if fired and subjects.subject_matches(subjects.ALL_TASK_REQUESTED, delivery.subject):
            try:
                event_id, body = firing_event(body, fired, stored_at)
            except msgspec.DecodeError as exc:
                reason = f"schedule firing {head.id} is not a task request: {exc}"
                raise PermanentError(reason) from exc
        event = _Event(event_id, head.type, head.tenant, body, head.correlation_id or head.id)
        async with delivery.keepalive():
            targets = self._subscription_targets(event, stored_at)
            task_id = task_of(delivery.subject, head)
            if task_id:
                targets += await self._task_targets(
                    event.tenant, task_id, received_at, metadata.stream, metadata.sequence.stream
                )
            if not targets:
                return
            outcomes = await asyncio.gather(
                *(self._deliver_or_retry(target, event, delivery) for target in targets)
            )
            await self._settle(event, targets, outcomes, delivery)

    def _subscription_targets(self, event: _Event, stored_at: datetime) -> list[Target]:
        assert self.callback_key is not None
        targets: list[Target] = []
        for active in self.directory.matching(event.tenant, event.type):
            if stored_at < active.since:
                SKIPPED.inc()
                continue
            sub = active.subscription
            targets.append(
                Target(
                    subscription_id=sub.id,
                    url=sub.url,
                    secret=subscription_secret(self.callback_key, sub.tenant, sub.id),
                    stage=f"sub.{sub.id}",
                )
            )
        return targets

    async def _task_targets(
        self, tenant: str, task_id: str, received_at: float, stream: str, sequence: int
    ) -> list[Target]:
        assert self.callback_key is not None
        urls = await self.tasks.urls(tenant, task_id)
        if not urls:
            passed = await self.barrier.wait(
                received_at=received_at, stream=stream, sequence=sequence, within_s=BARRIER_WAIT_S
            )
            if not passed:
                raise RetryLater("task requests before this event are not all read yet")
            urls = await self.tasks.urls(tenant, task_id)
        secret = subscription_secret(self.callback_key, tenant, TASK_CALLBACKS_ID)
        return [Target(TASK_CALLBACKS_ID, url, secret, _url_stage(url)) for url in urls]

    async def _deliver_or_retry(
        self, target: Target, event: _Event, delivery: Delivery
    ) -> _Outcome:
        """One target's trouble (Redis, the ledger) must not cut the others short: they finish,
        and this one is retried with the event."""
        try:
            return await self._deliver(target, event, delivery)
        except Exception as exc:
            log.warning("callback of %s to %s: %r", event.id, target.subscription_id, exc)
            reason = f"{type(exc).__name__}: {exc}"
            return _Outcome("interrupted", DeliveryRecord(state="pending", reason=reason))

    async def _deliver(self, target: Target, event: _Event, delivery: Delivery) -> _Outcome:
        """Drive one (target, event) record: terminal → publish its outcome again (same id, so
        it is dropped downstream) and post nothing; otherwise post and record what came of it.
        A record left ``sending`` by a crashed worker is posted again: the receiver dedupes by
        the event id."""
        key = record_key(event.tenant, target, event.id)
        replace = msgspec.structs.replace
        try:
            record, revision = await self.ledger.open(key)
            if record.state in domain.TERMINAL:
                await self._publish_outcome(event, target, record, delivery)
                return _Outcome("done", record)
            record = replace(record, state="sending", attempts=record.attempts + 1)
            revision = await self.ledger.write(key, record, revision)
            headers = signed_headers(
                target.secret, event.body, event_id=event.id, subscription_id=target.subscription_id
            )
            result = await self.poster.post(target.url, event.body, headers)
            now = datetime.now(UTC)
            code = str(result.status_code) if result.status_code is not None else None
            if isinstance(result, Posted):
                record = replace(record, state="delivered", code=code, reason=None, at=now)
            elif isinstance(result, Refused):
                record = replace(record, state="failed", code=code, reason=result.reason, at=now)
            else:
                record = replace(record, state="pending", code=code, reason=result.reason, at=now)
            await self.ledger.write(key, record, revision)
        except Fenced:
            # Another worker moved this record since we read it: it owns this post now.
            return _Outcome("interrupted", DeliveryRecord(state="pending"))
        self._count_and_log(target, event, result)
        if isinstance(result, Refused) and result.refused_by_policy:
            await self._audit_refusal(event, target, result, delivery)
        if isinstance(result, Failed):
            return _Outcome("retry", record)
        await self._publish_outcome(event, target, record, delivery)
        return _Outcome("done", record)

    async def _settle(
        self,
        event: _Event,
        targets: list[Target],
        outcomes: list[_Outcome],
        delivery: Delivery,
    ) -> None:
        """Ack when every target is settled; otherwise nak (through ``RetryLater``) so only the
        unsettled ones are tried again. On the last delivery the unsettled ones are logged as
        failed, and the runtime dead-letters the event and raises an alert."""
        unsettled = [(t, o) for t, o in zip(targets, outcomes, strict=True) if o.result != "done"]
        if not unsettled:
            return
        if delivery.num_delivered >= self.retry.max_deliver:
            for target, outcome in unsettled:
                if outcome.result != "retry":
                    continue  # another worker is posting it; its outcome will be logged
                OUTCOMES.labels("gave_up").inc()
                record = outcome.record
                reason = (
                    f"gave up after {record.attempts} attempt(s) over "
                    f"{delivery.num_delivered} deliveries: {record.reason}"
                )
                failed = msgspec.structs.replace(record, state="failed", reason=reason)
                await self._publish_outcome(event, target, failed, delivery)
            # The runtime waits for PubAcks only of handlers that succeed: make the log
            # durable before the event goes to the DLQ.
            await asyncio.gather(*delivery.pending)
        names = ", ".join(
            f"{t.subscription_id} ({o.record.reason or o.result})" for t, o in unsettled
        )
        raise RetryLater(f"callback not delivered yet to {names}")

    async def _publish_outcome(
        self, event: _Event, target: Target, record: DeliveryRecord, delivery: Delivery
    ) -> None:
        status_code = int(record.code) if record.code and record.code.isdigit() else None
        payload: CallbackDelivered | CallbackDeliveryFailed
        if record.state == "delivered":
            state = "delivered"
            payload = CallbackDelivered(
                subscription_id=target.subscription_id,
                tenant=event.tenant,
                event_id=event.id,
                event_type=event.type,
                status_code=status_code or 200,
                attempts=max(1, record.attempts),
                delivered_at=record.at or datetime.now(UTC),
            )
        else:
            state = "failed"
            payload = CallbackDeliveryFailed(
                subscription_id=target.subscription_id,
                tenant=event.tenant,
                event_id=event.id,
                event_type=event.type,
                reason=record.reason or record.state,
                status_code=status_code,
                attempts=max(1, record.attempts),
            )
        out = wire.make_envelope(
            payload,
            id=outcome_id(event.id, target, state),
            source=SOURCE,
            tenant=event.tenant,
            correlation_id=event.correlation_id,
        )
        await delivery.publish_envelope(
            subjects.delivery(state, CALLBACK_PLATFORM, event.tenant), out
        )

    async def _audit_refusal(
        self, event: _Event, target: Target, result: Refused, delivery: Delivery
    ) -> None:
        """A callback URL that points inside the hub's network is someone probing it (or a
        receiver that needs ``callbacks.allow_internal``): on the audit trail, once per
        (target, event)."""
        audit = AuditRecorded(
            actor=target.subscription_id,
            action="callback.refused",
            target=redact(target.url),
            outcome=OUTCOME_DENIED,
            tenant=event.tenant,
            detail=result.reason,
            labels={"event_id": event.id, "event_type": event.type},
        )
        out = wire.make_envelope(
            audit,
            id=outcome_id(event.id, target, "refused"),
            source=SOURCE,
            tenant=event.tenant,
            correlation_id=event.correlation_id,
        )
        await delivery.publish_envelope(subjects.audit(event.tenant, "security"), out)

    @staticmethod
    def _count_and_log(target: Target, event: _Event, result: Posted | Refused | Failed) -> None:
        # Never the secret or the signature; the URL without its query (it may hold a token).
        if isinstance(result, Posted):
            OUTCOMES.labels("delivered").inc()
            return
        where = f"{target.subscription_id} at {redact(target.url)}"
        if isinstance(result, Refused):
            OUTCOMES.labels("refused").inc()
            log.warning("callback of %s to %s refused: %s", event.id, where, result.reason)
        else:
            OUTCOMES.labels("failed").inc()
            log.info("callback of %s to %s failed, will retry: %s", event.id, where, result.reason)
