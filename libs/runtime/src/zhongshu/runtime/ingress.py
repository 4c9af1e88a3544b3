"""What both ingress services share: read a bounded body, refuse bad input with a clear status
(publishing nothing, counting it and auditing it without secrets), and turn one platform event
into exactly one stored event: a durable late-retry check in the ``dedupe`` KV bucket, a publish
with a deterministic ``Nats-Msg-Id``, and the 2xx only after the PubAck."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
from typing import Any

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
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

    def __init__(self, *, service: str, platform: str, publisher: Publisher, dedupe: KeyValue):
        self.service, self.platform = service, platform
        self._publisher = publisher
        self._dedupe = dedupe

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
        return cls(service=service, platform=platform, publisher=publisher, dedupe=bucket)

    async def accept(self, *, dedupe_key: str, subject: str, envelope: Envelope[Any]) -> Outcome:
        """Publish ``envelope`` unless this platform event was already published.

        Within JetStream's duplicate window the ``Nats-Msg-Id`` (the envelope id, derived from
        the platform's event id) drops a concurrent copy from another replica; a retry that
        comes hours later (Feishu retries for ~7 h) finds the durable key written after the
        first PubAck. Raises on a bus failure, so the caller answers 503 and the platform
        retries."""
        key = _kv_key(self.platform, dedupe_key)
        if await self._seen(key):
            ACCEPTED.labels(self.platform, Outcome.DUPLICATE).inc()
            return Outcome.DUPLICATE
        ack = await self._publisher.publish(subject, wire.encode(envelope), msg_id=envelope.id)
        # Another replica may have recorded it first: same event, same outcome.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self._dedupe.create(key, str(ack.seq).encode())
        outcome = Outcome.DUPLICATE if ack.duplicate else Outcome.PUBLISHED
        ACCEPTED.labels(self.platform, outcome).inc()
        return outcome

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


def _kv_key(platform: str, dedupe_key: str) -> str:
    """KV keys allow only ``[-/_=.a-zA-Z0-9]`` and platform ids are case-sensitive (DingTalk's
    msgId is base64), so the key is a hash of the id, scoped by platform."""
    digest = hashlib.sha256(dedupe_key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{platform}.{digest}"
