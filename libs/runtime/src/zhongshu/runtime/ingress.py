"""What both ingress services share: read a bounded body, refuse bad input with a clear status
(publishing nothing, counting it and auditing it without secrets), and turn one platform event
into exactly one stored event: a durable late-retry check in the ``dedupe`` KV bucket, a publish
with a deterministic ``Nats-Msg-Id``, and the 2xx only after the PubAck."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter
from starlette.requests import Request

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.ids import new_event_id
from zhongshu.contracts.streams import DEDUPE_KV
from zhongshu.runtime.bus import Publisher

log = logging.getLogger("zhongshu.runtime.ingress")

MAX_BODY_BYTES = 1024 * 1024
# Events created less than this long ago are within every replica's reach of the stream's
# 120 s duplicate window (minus 30 s for clock skew between the platform and us).
FRESH_S = 90.0

REJECTED = Counter(
    "zhongshu_ingress_rejected_total",
    "Platform requests refused (security counter): nothing was published",
    ("platform", "reason"),
)
ACCEPTED = Counter(
    "zhongshu_ingress_events_total",
    "Platform events accepted, by outcome (published, or duplicate of one already published)",
    ("platform", "outcome"),
)


class Rejected(Exception):
    """Bad input: answered with ``status`` and a reason safe to show (never a secret)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status, self.reason, self.detail = status, reason, detail or reason


class Outcome(enum.StrEnum):
    PUBLISHED = "published"
    DUPLICATE = "duplicate"


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body (signatures cover raw bytes), refused with 413 beyond ``limit`` without
    reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "body too large", f"body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "body too large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class IngressGate:
    """Publishes accepted platform events once, and records refused ones."""

    def __init__(
        self,
        *,
        service: str,
        platform: str,
        publisher: Publisher,
        dedupe: KeyValue,
        js: JetStreamContext,
    ):
        self.service, self.platform = service, platform
        self._publisher = publisher
        self._dedupe = dedupe
        self._js = js

    @classmethod
    async def open(
        cls, *, service: str, platform: str, publisher: Publisher, js: Any
    ) -> IngressGate:
        try:
            bucket = await js.key_value(DEDUPE_KV.bucket)
        except BucketNotFoundError as exc:
            raise RuntimeError(
                f"KV bucket {DEDUPE_KV.bucket!r} is missing; run `zhongshu provision`"
            ) from exc
        return cls(service=service, platform=platform, publisher=publisher, dedupe=bucket, js=js)

    async def accept(
        self,
        *,
        dedupe_key: str,
        subject: str,
        envelope: Envelope[Any],
        created_at: datetime | None = None,
        timeout_s: float = 5.0,
    ) -> Outcome:
        """Publish ``envelope`` unless this platform event was already published.

        A copy inside JetStream's duplicate window is dropped by the ``Nats-Msg-Id`` (the
        envelope id, derived from the platform's event id), whichever replica receives it; so
        an event the platform created less than ``FRESH_S`` ago skips the durable check, which
        only a late retry (Feishu retries for ~7 h) needs. The durable key is written after the
        PubAck without waiting for it: a crash in that instant can let a retry hours later be
        stored again, which the notifier's delivery ledger still keeps from reaching the user
        twice. Raises on a bus failure, so the caller answers 503 and the platform retries."""
        key = _kv_key(self.platform, dedupe_key)
        fresh = (
            created_at is not None and (datetime.now(UTC) - created_at).total_seconds() < FRESH_S
        )
        if not fresh and await self._seen(key):
            ACCEPTED.labels(self.platform, Outcome.DUPLICATE).inc()
            return Outcome.DUPLICATE
        ack = await self._publisher.publish(
            subject, wire.encode(envelope), msg_id=envelope.id, timeout_s=timeout_s
        )
        await self._remember(key, ack.seq)
        outcome = Outcome.DUPLICATE if ack.duplicate else Outcome.PUBLISHED
        ACCEPTED.labels(self.platform, outcome).inc()
        return outcome

    async def _remember(self, key: str, seq: int) -> None:
        """Create the durable key (only if absent, like ``kv.create``), not awaiting the ack."""
        try:
            future = await self._js.publish_async(
                f"$KV.{DEDUPE_KV.bucket}.{key}",
                str(seq).encode(),
                headers={"Nats-Expected-Last-Subject-Sequence": "0"},
            )
        except Exception as exc:
            log.warning("could not record dedupe key %s: %r", key, exc)
            return
        future.add_done_callback(_ignore_existing)

    async def _seen(self, key: str) -> bool:
        try:
            entry = await self._dedupe.get(key)
        except KeyNotFoundError:
            return False
        return entry.value is not None and entry.operation is None

    async def reject(
        self, rejection: Rejected, *, app: str, tenant: str = "", remote: str = ""
    ) -> None:
        """Count and audit a refused request (best effort: auditing never turns a 4xx into a
        5xx). The audit names the reason, never the offending signature or token."""
        REJECTED.labels(self.platform, rejection.reason).inc()
        log.warning("refused %s request for app %s: %s", self.platform, app, rejection.detail)
        event = AuditRecorded(
            actor=remote or "unknown",
            action=f"{self.platform}.webhook.rejected",
            target=app,
            outcome="denied",
            tenant=tenant,
            detail=rejection.detail,
        )
        envelope = wire.make_envelope(
            event,
            id=new_event_id(),
            source=f"zhongshu/{self.service}",
            tenant=tenant,
        )
        try:
            await asyncio.wait_for(
                self._publisher.publish(
                    subjects.audit(tenant or "_", "security"),
                    wire.encode(envelope),
                    msg_id=envelope.id,
                ),
                2.0,
            )
        except Exception as exc:
            log.warning("could not audit a refused request: %r", exc)


def _ignore_existing(future: asyncio.Future[Any]) -> None:
    """A key that already exists means another replica (or copy) recorded it: fine."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None and "wrong last sequence" not in str(exc):
        log.warning("could not record a dedupe key: %r", exc)


def _kv_key(platform: str, dedupe_key: str) -> str:
    """KV keys allow only ``[-/_=.a-zA-Z0-9]`` and platform ids are case-sensitive (DingTalk's
    msgId is base64), so the key is a hash of the id, scoped by platform."""
    digest = hashlib.sha256(dedupe_key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{platform}.{digest}"
