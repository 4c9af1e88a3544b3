"""What the TRACES stream holds: one finished span per message on `trace.span.<trace id>`, and
index entries on `trace.index.<digest>` naming the trace an id belongs to. Written by every
service's span exporter (`zhongshu.runtime.telemetry`), read by `zhongshu trace`."""

from typing import Final, Literal

import msgspec

AttributeValue = str | bool | int | float | list[str | bool | int | float]

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
SpanStatus = Literal["unset", "ok", "error"]

# Span attributes every service sets where it knows them; each indexed key finds the trace.
TENANT: Final = "zhongshu.tenant"
SERVICE: Final = "zhongshu.service"
TASK_ID: Final = "zhongshu.task_id"
PLATFORM_MESSAGE_ID: Final = "zhongshu.platform_message_id"
MESSAGE_ID: Final = "messaging.message.id"
"""The envelope id (`Nats-Msg-Id`) of the message a span consumed or published."""
INDEXED: Final = (TASK_ID, MESSAGE_ID, PLATFORM_MESSAGE_ID)


class SpanRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One finished span. Times are Unix epoch nanoseconds; ids are lower-case hex."""

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    kind: SpanKind = "internal"
    service: str
    start_ns: int
    end_ns: int
    status: SpanStatus = "unset"
    status_message: str = ""
    attributes: dict[str, AttributeValue] = msgspec.field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class TraceIndexEntry(msgspec.Struct, frozen=True, kw_only=True):
    """`key` (an id as the operator would type it) belongs to trace `trace_id`."""

    key: str
    trace_id: str


def span_msg_id(trace_id: str, span_id: str) -> str:
    """The `Nats-Msg-Id` of a span's message: an exporter's retry is stored once."""
    return f"{trace_id}{span_id}"
