"""Exactly-once towards the user: claim a send in the ledger, send, record the outcome.

sending (created before the HTTP call, or written over ``pending`` fenced by revision) →
delivered | failed | ambiguous (written after it, fenced again): two writes for a reply sent
in one part. What a redelivered message does with the record
it finds is decided by :func:`domain.next_step`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec

from zhongshu.notifier import domain
from zhongshu.notifier.adapters.ledger import Ledger
from zhongshu.notifier.adapters.results import (
    Ambiguous,
    Delivered,
    RateLimited,
    Rejected,
    SendResult,
    Unreachable,
)
from zhongshu.notifier.domain import DeliveryRecord

SendPart = Callable[[str, int], Awaitable[SendResult]]
"""Sends one part of the text (the part, its offset in the whole text)."""
Confirm = Callable[[], Awaitable[None]]
WaitSlot = Callable[[], Awaitable[Confirm]]
"""Waits for rate-limit slots; the returned call tells the limiter the platform answered."""

# Below this a "too long" answer is not about our text: fail instead of halving forever.
MIN_PART_BYTES = 500
# A platform rate-limit answer asking for a longer pause is handed back to the broker (nak with
# backoff) rather than holding a worker.
MAX_INLINE_WAIT_S = 30.0


class RetryLater(Exception):
    """Transient: the runtime naks the message and it comes back after a backoff."""


class Busy(RetryLater):
    """Another worker is sending this record (or just wrote it): the outcome is theirs to
    record; wait for it, or come back after a backoff."""


def _now() -> datetime:
    return datetime.now(UTC)


PENDING = DeliveryRecord(state="pending")


async def deliver_once(
    ledger: Ledger,
    key: str,
    *,
    text: str,
    idempotent: bool,
    max_bytes: int,
    send_part: SendPart,
    wait_slot: WaitSlot,
    in_flight_s: float = 0.0,
    found: tuple[DeliveryRecord, int] | None = None,
    start: DeliveryRecord = PENDING,
    leave_sending: Callable[[], bool] | None = None,
) -> tuple[DeliveryRecord, int]:
    """Drive one record to a terminal state and return it with its revision; raise
    :class:`RetryLater` for transient trouble (the record is left ``pending``, never
    ``sending``, when nothing went out), :class:`Busy` when another worker may still be
    sending it and ``Fenced`` when another worker owns the send. ``in_flight_s`` bounds how
    long a send can wait for the platform's answer.

    ``found`` is the record as the caller read it; without one, the record is created
    directly as ``sending`` from ``start`` (one write instead of ``pending`` then
    ``sending``), and the record found instead, if any, is acted on as ``next_step`` says.

    When ``leave_sending()`` says so once the text went out, ``delivered`` is returned but not
    written: the caller writes it at the returned revision together with what it does next
    (a streamed card's final text). Only for a send that may be repeated: until then the record
    says ``sending``, and a worker that finds it stale sends again."""
    replace = msgspec.structs.replace
    confirm: Confirm | None = None
    if found is None:
        # The slot is taken before the claim, so a record is never ``sending`` while it waits
        # for one (it would look in flight, or stale, to another worker meanwhile).
        confirm = await wait_slot()
        claim = replace(start, state="sending", attempts=start.attempts + 1, claimed_at=_now())
        try:
            record, revision, created = await ledger.claim(key, claim)
        except BaseException:
            await confirm()
            raise
        if not created:
            await confirm()  # not used: the record found decides
            confirm = None
    else:
        (record, revision), created = found, False
    if not created:
        step = domain.next_step(record, idempotent=idempotent, now=_now(), in_flight_s=in_flight_s)
        if step == "republish":
            return record, revision
        if step == "wait":
            raise Busy(f"delivery record {key} is being sent by another worker")
        if step == "mark_ambiguous":
            record = replace(
                record,
                state="ambiguous",
                reason="the worker stopped between sending and recording; not resent "
                "(the platform has no idempotency key)",
                at=_now(),
            )
            return record, await ledger.write(key, record, revision)
    limit = max_bytes
    while True:
        offset = record.sent_chars
        part = domain.split_utf8(text[offset:], limit)
        try:
            if confirm is None:
                confirm = await wait_slot()
                record = replace(
                    record, state="sending", attempts=record.attempts + 1, claimed_at=_now()
                )
                revision = await ledger.write(key, record, revision)
            result = await send_part(part, offset)
        finally:
            if confirm is not None:
                await confirm()
            confirm = None
        if isinstance(result, Delivered):
            record = replace(
                record,
                sent_chars=offset + len(part),
                platform_message_id=record.platform_message_id or result.platform_message_id,
            )
            if record.sent_chars >= len(text):
                record = replace(record, state="delivered", at=_now())
                if idempotent and leave_sending is not None and leave_sending():
                    return record, revision
                return record, await ledger.write(key, record, revision)
            continue
        if isinstance(result, Rejected) and result.too_long and limit // 2 >= MIN_PART_BYTES:
            limit //= 2
            record = replace(record, state="pending")
            revision = await ledger.write(key, record, revision)
            continue
        if isinstance(result, Rejected):
            record = replace(
                record, state="failed", reason=result.reason, code=result.code, at=_now()
            )
            return record, await ledger.write(key, record, revision)
        if isinstance(result, RateLimited) and result.retry_after_s <= MAX_INLINE_WAIT_S:
            # Our own buckets should prevent this; when the platform still says "too fast"
            # (another client shares the chat's quota), wait it out here instead of failing.
            revision = await ledger.write(key, replace(record, state="pending"), revision)
            await asyncio.sleep(result.retry_after_s)
            continue
        if isinstance(result, Ambiguous) and not idempotent:
            record = replace(record, state="ambiguous", reason=result.reason, at=_now())
            return record, await ledger.write(key, record, revision)
        # Nothing went out (or a resend is harmless): back to pending, retry later.
        await ledger.write(key, replace(record, state="pending"), revision)
        raise RetryLater(_describe(result))


def _describe(result: SendResult) -> str:
    if isinstance(result, RateLimited):
        wait = result.retry_after_s
        return f"rate limited by the platform (code {result.code}), retry after {wait:.1f}s"
    if isinstance(result, Unreachable | Ambiguous):
        return result.reason
    return repr(result)
