"""The CloudEvents 1.0 envelope every bus message is wrapped in (structured-mode JSON).

Other teams can publish and read with any CloudEvents SDK. Our own extension attributes follow
the spec's naming rule (only `[a-z0-9]`), so `conversation_id` is `conversationid` on the wire.
Encoding and decoding go straight between bytes and typed structs: no dicts in between.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar, cast

import msgspec

from zhongshu.contracts.events import EVENT_TYPES, Event
from zhongshu.contracts.events.base import AwareDatetime

T = TypeVar("T")
E = TypeVar("E", bound=Event)

SPEC_VERSION: Final = "1.0"
JSON: Final = "application/json"


def _spec_version() -> str:
    # A factory, not a plain default: omit_defaults would otherwise drop `specversion` from the
    # wire, and CloudEvents requires it on every event.
    return SPEC_VERSION


class Envelope(msgspec.Struct, Generic[T], frozen=True, kw_only=True, omit_defaults=True):
    """A CloudEvents 1.0 event whose `data` is `T`; optional attributes at their default are
    left off the wire."""

    specversion: str = msgspec.field(default_factory=_spec_version)
    id: str
    """Unique per event from one `source`; equal to the message's `Nats-Msg-Id`."""
    source: str
    """Who produced it, e.g. `zhongshu/router` or another team's URI."""
    type: str
    """`zhongshu.<area>.<event>.v<n>`: selects the class `data` decodes to."""
    time: AwareDatetime
    subject: str | None = None
    datacontenttype: str = JSON
    dataschema: str | None = None
    tenant: str = ""
    conversation_id: str | None = msgspec.field(default=None, name="conversationid")
    """Groups a chat thread's events (extension attribute)."""
    correlation_id: str | None = msgspec.field(default=None, name="correlationid")
    """Id of the event that started the causal chain, e.g. the inbound message (extension)."""
    data: T


class UnknownEventType(msgspec.DecodeError):
    """The envelope's `type` is not one zhongshu defines (a `DecodeError`, so consume loops that
    dead-letter undecodable messages treat it the same way)."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


class UnexpectedEventType(msgspec.ValidationError):
    """The envelope holds a different event type than the one the reader asked for."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected event type {expected!r}, got {actual!r}")
        self.expected = expected
        self.actual = actual


def make_envelope(
    event: E,
    *,
    id: str,
    source: str,
    tenant: str,
    subject: str | None = None,
    conversation_id: str | None = None,
    correlation_id: str | None = None,
    time: datetime | None = None,
) -> Envelope[E]:
    """Wrap an event; its `type` comes from the event class, `time` defaults to now (UTC)."""
    return Envelope(
        id=id,
        source=source,
        type=type(event).TYPE,
        time=time if time is not None else datetime.now(UTC),
        subject=subject,
        tenant=tenant,
        conversation_id=conversation_id,
        correlation_id=correlation_id,
        data=event,
    )


_ENCODER: Final = msgspec.json.Encoder()


def encode(envelope: Envelope[Any]) -> bytes:
    """The envelope as structured-mode CloudEvents JSON."""
    return _ENCODER.encode(envelope)


_DECODERS: dict[type[Event], msgspec.json.Decoder[Any]] = {}


def decoder(event_cls: type[E]) -> msgspec.json.Decoder[Envelope[E]]:
    """A cached decoder from bytes to `Envelope[event_cls]`.

    It validates `data` against `event_cls` but does not check the envelope's `type`; use
    `decode` for that, or `decode_any` when a subject carries several event types.
    """
    cached = _DECODERS.get(event_cls)
    if cached is None:
        cached = msgspec.json.Decoder(cast(Any, Envelope)[event_cls])
        _DECODERS[event_cls] = cached
    return cast("msgspec.json.Decoder[Envelope[E]]", cached)


def decode(raw: bytes, event_cls: type[E]) -> Envelope[E]:
    """Decode an envelope that must hold `event_cls`; `UnexpectedEventType` otherwise."""
    try:
        envelope = _decoded(decoder(event_cls).decode, raw)
    except msgspec.ValidationError as invalid:
        # Say "wrong type" rather than "missing field" when that is the cause.
        actual = peek_type(raw)
        if actual != event_cls.TYPE:
            raise UnexpectedEventType(event_cls.TYPE, actual) from invalid
        raise
    if envelope.type != event_cls.TYPE:
        raise UnexpectedEventType(event_cls.TYPE, envelope.type)
    return envelope


class _TypeOnly(msgspec.Struct):
    type: str


_TYPE_DECODER: Final = msgspec.json.Decoder(_TypeOnly)


def peek_type(raw: bytes) -> str:
    """The envelope's `type` without decoding the rest (other fields are skipped, not built)."""
    return _decoded(_TYPE_DECODER.decode, raw).type


def decode_any(raw: bytes) -> Envelope[Any]:
    """Decode an envelope into the event class its `type` names (`EVENT_TYPES`).

    Raises `UnknownEventType` for a type zhongshu does not define, and `msgspec.DecodeError`
    (or its subclass `ValidationError`) for malformed input.
    """
    event_type = peek_type(raw)
    event_cls = EVENT_TYPES.get(event_type)
    if event_cls is None:
        raise UnknownEventType(event_type)
    return _decoded(decoder(event_cls).decode, raw)


_UNTYPED_DECODER: Final = msgspec.json.Decoder(Envelope[Any])


def decode_untyped(raw: bytes) -> Envelope[Any]:
    """Decode any CloudEvent with its `data` as plain JSON values, whatever its type: for
    events other teams publish on `events.>`, and for tools that handle every type alike."""
    return _decoded(_UNTYPED_DECODER.decode, raw)


def _decoded(decode: Callable[[bytes], T], raw: bytes) -> T:
    """``decode(raw)``, failing only with ``msgspec.DecodeError`` as the readers above promise
    (callers skip or dead-letter on it). msgspec itself raises ``UnicodeDecodeError`` for bytes
    that are not UTF-8 and ``RecursionError`` for JSON nested too deep: found by fuzzing, and
    either one let through would be retried for ever or stop a reader at someone else's bytes."""
    try:
        return decode(raw)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise msgspec.DecodeError(f"not a JSON document: {type(exc).__name__}") from None
