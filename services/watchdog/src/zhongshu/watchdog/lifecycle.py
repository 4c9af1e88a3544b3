"""The alerts' state in the `alerts` bucket: each decision of `domain` written with compare-and-set
on the key's revision (replicas and concurrent handlers apply a transition once), then announced
as `AlertStateChanged` on `alerting.state.<key>` under a deterministic id.

A change is stored with its announcement before it is published, and the announcement is
cleared once the PubAck came: a crash in between leaves it in the record, and the next sweep
publishes it under the same id (JetStream drops it if the first publish did land)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events.alerts import (
    AlertActionRequested,
    AlertRaised,
    AlertStateChanged,
    alert_key,
)
from zhongshu.contracts.events.audit import OUTCOME_SUCCEEDED
from zhongshu.runtime import auditing
from zhongshu.runtime.bus import Publisher
from zhongshu.watchdog import metrics
from zhongshu.watchdog.domain import (
    AlertRecord,
    Decision,
    acted,
    announced,
    change_id,
    registered,
)

log = logging.getLogger("zhongshu.watchdog.lifecycle")
AUDITED_ACTIONS = {"acknowledge": "acknowledged", "silence": "silenced", "resolve": "resolved"}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertRecord)
ATTEMPTS = 10
ANNOUNCE_AFTER_S = 5.0
"""A stored announcement older than this is assumed lost and published again by the sweep."""


def decode_record(data: bytes) -> AlertRecord:
    return _decoder.decode(data)


class AlertBook:
    """Reads and writes alert records; publishes their changes."""

    def __init__(self, kv: KeyValue, publisher: Publisher) -> None:
        self._kv = kv
        self._publisher = publisher

    async def read(self, key: str) -> tuple[AlertRecord | None, int]:
        """The record and its revision (None, 0 when there is none)."""
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, 0
        return decode_record(entry.value), int(entry.revision or 0)

    async def apply(
        self, key: str, decide: Callable[[AlertRecord | None], Decision]
    ) -> AlertStateChanged | None:
        """Decide on the current record and store the result; retried on a concurrent write.
        Returns the change announced, if any."""
        for _ in range(ATTEMPTS):
            record, revision = await self.read(key)
            decision = decide(record)
            if decision.record is None:
                return None
            try:
                revision = await self._write(key, decision.record, revision)
            except KeyWrongLastSequenceError:
                continue  # somebody else wrote first: decide again on what they wrote
            if decision.change is not None:
                await self.announce(decision.record, revision)
                metrics.TRANSITIONS.labels(decision.change.state).inc()
            return decision.change
        raise RuntimeError(f"alert {key}: {ATTEMPTS} concurrent writes in a row")

    async def announce(self, record: AlertRecord, revision: int) -> None:
        """Publish the record's pending change, then clear it (if nobody wrote meanwhile)."""
        change = record.announce
        if change is None:
            return
        envelope = wire.make_envelope(
            change,
            id=change_id(record),
            source="zhongshu/watchdog",
            tenant=change.tenant or "",
        )
        await self._publisher.publish(
            subjects.alert_state(record.key), wire.encode(envelope), msg_id=envelope.id
        )
        # A newer write may carry it: the sweep then publishes it again under the same id.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self._write(record.key, announced(record), revision)

    async def audit(self, env: Envelope[AlertActionRequested], *, changed: bool) -> None:
        """`alert.acknowledged|silenced|resolved` on `audit.<tenant>.alert`."""
        action, actor = env.data, env.data.actor
        detail = "" if changed else "changed nothing (already in that state, or no such alert)"
        if action.action == "silence":
            detail = f"for {action.silence_s} s" + (f"; {detail}" if detail else "")
        subject, data, msg_id = auditing.message(
            source="zhongshu/watchdog",
            actor=f"{actor.platform}:{actor.app}:{actor.id}" if actor.platform else actor.id,
            action=f"alert.{AUDITED_ACTIONS.get(action.action, action.action)}",
            target=f"alert:{action.key}",
            kind="alert",
            tenant=action.tenant or auditing.HUB_TENANT,
            outcome=OUTCOME_SUCCEEDED if changed else "unchanged",
            detail=detail,
            labels={k: v for k, v in (("name", actor.name), ("chat", action.chat_id or "")) if v},
            event_id=f"audit-{env.id}",
        )
        await self._publisher.publish(subject, data, msg_id=msg_id)

    async def sweep(self, records: dict[str, tuple[AlertRecord, int, datetime]]) -> None:
        """Publish announcements that were stored but never cleared (a crash after the write)."""
        now = datetime.now(UTC)
        for key, (record, revision, written) in records.items():
            if record.announce is None or now - written < timedelta(seconds=ANNOUNCE_AFTER_S):
                continue
            try:
                await self.announce(record, revision)
            except Exception as exc:
                log.warning("could not announce the change of alert %s: %r", key, exc)

    async def _write(self, key: str, record: AlertRecord, revision: int) -> int:
        data = _encoder.encode(record)
        if revision:
            return int(await self._kv.update(key, data, last=revision))
        return int(await self._kv.create(key, data))


REGISTER_HORIZON = timedelta(days=1)
"""Raises older than this are history, not open problems (a fresh consumer reads the stream's
30 days): they are not registered."""


async def register(book: AlertBook, env: Envelope[AlertRaised]) -> AlertStateChanged | None:
    """Anybody's `AlertRaised`: a new episode or one more occurrence."""
    if datetime.now(UTC) - env.time > REGISTER_HORIZON:
        return None
    alert = env.data
    return await book.apply(
        alert_key(alert), lambda record: registered(record, alert, raise_id=env.id, at=env.time)
    )


UNREGISTERED_WAIT = timedelta(seconds=30)
"""How long an action on an alert not registered yet is retried before it counts as an action
on no alert. With the consumer's backoff (1, 5, 30 s) that is three retries, well inside its
five deliveries: such an action is never dead-lettered."""


class NotRegisteredYet(Exception):
    """An action on an alert whose raise is not registered yet. The raise and the action are read
    by two consumers, so a click can be handled first (a lagging raise consumer, a test pressing
    as soon as it sees the raise); the action is retried with the consumer's backoff."""


async def act(book: AlertBook, env: Envelope[AlertActionRequested]) -> AlertStateChanged | None:
    """A person's Acknowledge, Silence or Resolve, applied at the time it was pressed, and
    recorded in the audit trail (under an id derived from the action's: a redelivery records
    nothing twice)."""
    action = env.data
    record, _ = await book.read(action.key)
    if record is None and datetime.now(UTC) - env.time < UNREGISTERED_WAIT:
        raise NotRegisteredYet(f"alert {action.key} is not registered yet: the action is retried")
    change = await book.apply(action.key, lambda record: acted(record, action, env.time))
    if change is None:
        log.info("alert %s: %s by %s changed nothing", action.key, action.action, action.actor.id)
    await book.audit(env, changed=change is not None)
    return change
