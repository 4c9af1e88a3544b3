"""What both ingress services share: read a bounded body, refuse bad input with a clear status
(publishing nothing, counting it and auditing it without secrets), and store each platform event
once: a publish with a deterministic ``Nats-Msg-Id`` (the stream drops quick copies), a lookup
of late copies among the claims in the ``dedupe`` KV bucket (``runtime.once``), and the 2xx only
after the PubAck."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from datetime import datetime
from typing import Any

from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects, traces
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.ids import new_event_id
from zhongshu.runtime import once, telemetry
from zhongshu.runtime.bus import Publisher
from zhongshu.runtime.webhooks import WebhookRequest, WebhookResponse

log = logging.getLogger("zhongshu.runtime.ingress")
_TRACER = telemetry.tracer()

MAX_BODY_BYTES = 1024 * 1024
# Events created less than this long ago are within every replica's reach of the stream's
# 120 s duplicate window (minus 30 s for clock skew between the platform and us).
FRESH_S = 90.0
LATE = {H.LATE_COPY: "1"}

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

    def response(self) -> WebhookResponse:
        """What the platform is told: the status and the reason, never the detail."""
        return WebhookResponse.json({"error": self.reason}, self.status)


class Outcome(enum.StrEnum):
    PUBLISHED = "published"
    DUPLICATE = "duplicate"


async def read_body(request: WebhookRequest, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body (signatures cover raw bytes), refused with 413 beyond ``limit`` without
    reading it all."""
    declared = request.header("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "body too large", f"body of {declared} bytes exceeds {limit}")
    body = await request.read(limit)
    if body is None:
        raise Rejected(413, "body too large", f"body exceeds {limit} bytes")
    return body


class IngressGate:
    """Publishes accepted platform events once, and records refused ones."""

    def __init__(
        self,
        *,
        service: str,
        platform: str,
        publisher: Publisher,
        dedupe: KeyValue,
    ):
        self.service, self.platform = service, platform
        self._publisher = publisher
        self._dedupe = dedupe
        self._counted = {outcome: ACCEPTED.labels(platform, outcome) for outcome in Outcome}

    @classmethod
    async def open(
        cls, *, service: str, platform: str, publisher: Publisher, js: Any
    ) -> IngressGate:
        bucket = await once.open_bucket(js)
        return cls(service=service, platform=platform, publisher=publisher, dedupe=bucket)

    async def accept(
        self,
        *,
        subject: str,
        envelope: Envelope[Any],
        created_at: datetime | None = None,
        timeout_s: float = 5.0,
    ) -> Outcome:
        """Publish ``envelope`` unless this platform event was already handled.

        The envelope id (the ``Nats-Msg-Id``) is derived from the platform's event id, so a
        copy inside JetStream's duplicate window is dropped by the stream, whichever replica
        receives it. A late copy (created more than ``FRESH_S`` ago: Feishu retries for ~7 h)
        is first looked up among the claims the router takes in the ``dedupe`` bucket
        (``runtime.once``); one that slips past (its original not routed yet) is stored, and
        the router's atomic claim drops it (the ``LATE_COPY`` header tells the router to wait
        for that claim before it sends anything). Raises on a bus failure, so the caller
        answers 503 and the platform retries."""
        fresh = created_at is not None and time.time() - created_at.timestamp() < FRESH_S
        request_span = trace.get_current_span()
        if request_span.is_recording():
            request_span.set_attribute(traces.SERVICE, self.service)
            telemetry.describe_envelope(request_span, envelope, envelope.id)
        if not fresh and await once.seen(self._dedupe, envelope.id):
            self._counted[Outcome.DUPLICATE].inc()
            return Outcome.DUPLICATE
        with _TRACER.start_as_current_span(
            f"publish {subjects.chat_inbound_for(self.platform)}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": subject,
                traces.MESSAGE_ID: envelope.id,
            },
        ) as span:
            ack = await self._publisher.publish(
                subject,
                wire.encode(envelope),
                msg_id=envelope.id,
                headers=None if fresh else LATE,
                timeout_s=timeout_s,
            )
            outcome = Outcome.DUPLICATE if ack.duplicate else Outcome.PUBLISHED
            if span.is_recording():
                span.set_attribute("zhongshu.ingress.outcome", outcome.value)
                span.set_attribute("messaging.nats.stream.sequence", ack.seq)
        self._counted[outcome].inc()
        return outcome

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
            labels={"reason": rejection.reason},
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
