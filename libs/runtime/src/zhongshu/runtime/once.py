"""Acting on an event once, however often it was stored: a durable claim per event in the
``dedupe`` KV bucket, taken by the first consumer that acts on it (the router, for chat).

Why here and not in ingress: JetStream's ``Nats-Msg-Id`` window (2 minutes) drops the copies a
platform re-sends quickly, but Feishu retries for ~7 hours and DingTalk redelivers after
outages, so a late copy can be stored again. Ingress used to record every event's key after its
PubAck; that second write cost about a tenth of a webhook's time (P1) and, not being atomic with
the publish, a crash between the two could still let a late copy through. Here the key is
created atomically (``Nats-Expected-Last-Subject-Sequence: 0``) by the consumer, for a whole
fetched batch at once, before any handler runs, with the stored message's sequence as its
value, so:

* the first stored copy claims the key and is handled;
* the same copy redelivered (its consumer crashed after claiming) finds its own sequence and is
  handled again, as any redelivery is;
* any other copy finds another sequence and is acked without output, counted as a duplicate.

Only a copy that ingress stored late (the platform created it longer ago than the stream's
duplicate window reaches; header ``Zhongshu-Late-Copy``) can repeat an event stored earlier, so
only its outputs wait for the claim; a fresh event's claim travels with its outputs and is
settled before its ack, which keeps the claim off the hop's latency.

The key is derived from the ``Nats-Msg-Id`` header, which ingress derives from the platform's
own event id, so ingress can also look a late copy up before storing it (``seen``). A message
replayed from the DLQ carries a new message id, so a replay is a new claim."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from nats.js.api import PubAck
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from zhongshu.contracts import headers as H
from zhongshu.contracts.streams import DEDUPE_KV

if TYPE_CHECKING:
    from zhongshu.runtime.bus import Publisher
    from zhongshu.runtime.consumer import Delivery

log = logging.getLogger("zhongshu.runtime.once")

# JetStream's error for a failed expected-sequence check: the key exists.
WRONG_LAST_SEQUENCE = 10071
CLAIM_TIMEOUT_S = 10.0

Pending = tuple["Delivery", str, "asyncio.Future[PubAck]"]


def event_key(msg_id: str) -> str:
    """The claim key of the event published with ``msg_id``. KV keys allow only
    ``[-/_=.a-zA-Z0-9]`` and platform ids are case-sensitive (DingTalk's msgId is base64), so it
    is a hash of the id."""
    digest = hashlib.sha256(msg_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"ev.{digest}"


async def open_bucket(js: object) -> KeyValue:
    try:
        return await js.key_value(DEDUPE_KV.bucket)  # type: ignore[attr-defined, no-any-return]
    except BucketNotFoundError as exc:
        raise RuntimeError(
            f"KV bucket {DEDUPE_KV.bucket!r} is missing; run `zhongshu provision`"
        ) from exc


async def seen(bucket: KeyValue, msg_id: str) -> bool:
    """Whether the event published as ``msg_id`` was already claimed."""
    try:
        entry = await bucket.get(event_key(msg_id))
    except KeyNotFoundError:
        return False
    return entry.value is not None and entry.operation is None


class Claims:
    """Claims a fetched batch's events before their handlers run."""

    def __init__(self, bucket: KeyValue, publisher: Publisher) -> None:
        self._bucket = bucket
        self._publisher = publisher

    async def send(self, deliveries: list[Delivery]) -> list[Pending]:
        """Send the claims of a batch (messages without a message id are not claimed). Their
        outcome is read by :meth:`settle`; meanwhile handlers may run with their outputs held."""
        claims: list[Pending] = []
        for delivery in deliveries:
            msg_id = delivery.headers.get(H.MSG_ID)
            if not msg_id:
                continue
            key, seq = event_key(msg_id), str(delivery.stream_sequence)
            try:
                future = await self._publisher.publish_record(
                    f"$KV.{DEDUPE_KV.bucket}.{key}",
                    seq.encode(),
                    headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                    timeout_s=CLAIM_TIMEOUT_S,
                )
            except Exception as exc:
                delivery.error = exc
                continue
            claims.append((delivery, key, future))
        return claims

    async def settle(self, claims: list[Pending]) -> None:
        """Mark each delivery ``duplicate`` (another copy holds the claim) or set its ``error``
        (the claim could not be taken: it is retried like a failed handler)."""
        if not claims:
            return
        await asyncio.wait([future for _, _, future in claims])
        taken = []
        for delivery, key, future in claims:
            error = future.exception()
            if error is None:
                continue
            if isinstance(error, APIError) and error.err_code == WRONG_LAST_SEQUENCE:
                taken.append((delivery, key))
            else:
                delivery.error = error
        # Rare (late copies and redeliveries), but a replay storm can make many: look them up
        # together, not one round trip after another.
        holders = await asyncio.gather(
            *(self._bucket.get(key) for _, key in taken), return_exceptions=True
        )
        for (delivery, _), holder in zip(taken, holders, strict=True):
            if isinstance(holder, KeyNotFoundError):
                continue  # expired or purged since: nobody else holds it
            if isinstance(holder, BaseException):
                delivery.error = holder
            elif holder.value != str(delivery.stream_sequence).encode():
                delivery.duplicate = True
