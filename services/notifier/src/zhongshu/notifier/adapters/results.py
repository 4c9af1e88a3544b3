"""What a platform send can come to, as values: the handler decides what each means."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivered:
    platform_message_id: str | None = None


@dataclass(frozen=True)
class RateLimited:
    retry_after_s: float
    code: str | None = None


@dataclass(frozen=True)
class Rejected:
    """The platform refused for good (bad credentials, bot not in the chat, too long)."""

    reason: str
    code: str | None = None
    too_long: bool = False


@dataclass(frozen=True)
class Ambiguous:
    """The request may have reached the platform but no answer came back."""

    reason: str


@dataclass(frozen=True)
class Unreachable:
    """The request surely did not reach the platform (connection refused, 5xx before send)."""

    reason: str


SendResult = Delivered | RateLimited | Rejected | Ambiguous | Unreachable
