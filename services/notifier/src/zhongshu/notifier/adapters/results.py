"""What a platform send can come to, as values: the handler decides what each means. The
platforms' own values (``zhongshu.platforms.results``), with ``Delivered`` for a send the
platform accepted."""

from __future__ import annotations

from dataclasses import dataclass

from zhongshu.platforms.results import Ambiguous, RateLimited, Rejected, Unreachable

__all__ = ["Ambiguous", "Delivered", "RateLimited", "Rejected", "SendResult", "Unreachable"]


@dataclass(frozen=True)
class Delivered:
    platform_message_id: str | None = None


SendResult = Delivered | RateLimited | Rejected | Ambiguous | Unreachable
