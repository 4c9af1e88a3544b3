"""What a projection reads: one stream message with its sequence, subject and headers, and the
decoding every projection shares (an event type we do not know is skipped, not dead-lettered:
readers ignore what they do not understand, and a newer publisher must not stall the warm tier)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.msg import Msg

from zhongshu.contracts import envelope as wire
from zhongshu.runtime.errors import PermanentError

log = logging.getLogger("zhongshu.projector")

TERMINAL_TASK_STATES = ("completed", "failed", "cancelled")
TERMINAL_RUN_STATES = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class Record:
    """One message of a stream, as stored (the sequence is what the read models record)."""

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the stream stored it."""

    @classmethod
    def of(cls, stream: str, msg: Msg) -> Record:
        meta = msg.metadata
        return cls(
            stream=stream,
            seq=int(meta.sequence.stream),
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            time=meta.timestamp,
        )

    def token(self, index: int) -> str:
        """One token of the subject (`""` when it has fewer)."""
        tokens = self.subject.split(".")
        return tokens[index] if index < len(tokens) else ""


def decode_known(record: Record) -> wire.Envelope[Any] | None:
    """The envelope, or None when its type is not one zhongshu defines. A message that is not a
    valid envelope at all cannot become valid on a retry: `PermanentError` sends it to the DLQ."""
    try:
        return wire.decode_any(record.data)
    except wire.UnknownEventType as exc:
        log.debug("%s seq %d: %s; skipped", record.stream, record.seq, exc)
        return None
    except msgspec.DecodeError as exc:
        raise PermanentError(f"{record.subject} seq {record.seq}: not an envelope: {exc}") from exc


_JSON = msgspec.json.Encoder(order="sorted")


def to_json(value: Any) -> str:
    """JSON text for a ``jsonb`` parameter (keys sorted, so equal values are equal text)."""
    return _JSON.encode(value).decode()


def shorten(text: str, limit: int) -> str:
    """One line, at most ``limit`` characters (as the agent shortens titles and results)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
