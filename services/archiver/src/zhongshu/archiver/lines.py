"""One archived message = one JSON line: the stored message as JetStream holds it (sequence,
subject, headers, publish time) and its payload, byte for byte, so a restore republishes
exactly what was archived.

The payload is embedded as JSON (``event``) when it is one line of JSON, which every CloudEvents
envelope on the bus is; anything else (binary, pretty-printed JSON from another team) is kept as
base64 (``data_b64``). The event's own ``time`` decides its month; without one (or when it is not
an RFC 3339 time) the publish time does."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec

NS: Final = 1_000_000_000
_NO_EVENT: Final = msgspec.Raw(b"")  # the default, left off the line (a Raw cannot be None)


class ArchivedMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    seq: int
    """Stream sequence in the stream the message was archived from."""
    subject: str
    published: str
    """When JetStream stored it: RFC 3339, UTC, nanoseconds."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """As stored, ``Nats-Msg-Id`` included."""
    event: msgspec.Raw = _NO_EVENT
    """The body itself when it is one line of JSON (every envelope is)."""
    data_b64: str | None = None
    """The body in base64 otherwise."""

    def payload(self) -> bytes:
        """The original message body, byte for byte."""
        if self.data_b64 is None:
            return bytes(self.event)
        return base64.b64decode(self.data_b64)


class _EventTime(msgspec.Struct):
    """Only the envelope's ``time``: msgspec skips every other field without building it."""

    time: datetime | None = None


_PEEK: Final = msgspec.json.Decoder(_EventTime)
_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(ArchivedMessage)


def event_time(payload: bytes) -> tuple[datetime | None, bool]:
    """(the envelope's ``time`` if it has a usable one, whether the payload is JSON)."""
    try:
        moment = _PEEK.decode(payload).time
    except msgspec.ValidationError:
        # JSON, but not an object with an RFC 3339 `time` (an array, a number, `time: 5`).
        # A validation error can stop before the end of the input, so check the rest too.
        try:
            msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return None, False
        return None, True
    except msgspec.DecodeError:
        return None, False
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment, True


class PublishTimes:
    """RFC 3339 strings for nanosecond timestamps, reusing the formatted second: a chunk's
    messages mostly share their seconds, and strftime is the costly part."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, ns: int) -> str:
        second, fraction = divmod(ns, NS)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{fraction:09d}Z"


def encode_line(
    seq: int,
    subject: str,
    published: str,
    headers: Mapping[str, str] | None,
    payload: bytes,
    is_json: bool,
) -> bytes:
    """One line, without its newline."""
    line = ArchivedMessage(
        seq=seq,
        subject=subject,
        published=published,
        headers=dict(headers) if headers else {},
    )
    if is_json and b"\n" not in payload and b"\r" not in payload:
        line.event = msgspec.Raw(payload)
    else:
        line.data_b64 = base64.b64encode(payload).decode("ascii")
    return _ENCODER.encode(line)


def decode_lines(text: bytes) -> list[ArchivedMessage]:
    """Every line of one decompressed object, in order."""
    return _DECODER.decode_lines(text)
