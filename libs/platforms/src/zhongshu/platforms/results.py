"""What a platform call can come to, as values: the caller decides what each means (the notifier
retries a ``RateLimited`` send later, the router refuses politely when a look-up failed).

No value holds a secret: reasons name codes, the platform's own message and exception types,
never an app secret or a token (``Token.value`` is kept out of its ``repr``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ok:
    """The platform accepted the call; ``payload`` is its JSON answer (an object, else empty)."""

    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RateLimited:
    """The platform asked us to slow down: try again after ``retry_after_s``."""

    retry_after_s: float
    code: str | None = None


@dataclass(frozen=True)
class Rejected:
    """The platform refused for good (bot not in the chat, unknown user, content too long):
    the same call will be refused again. ``code`` is the platform's (as text)."""

    reason: str
    code: str | None = None
    too_long: bool = False


@dataclass(frozen=True)
class CredentialsRefused(Rejected):
    """The platform refused the app's credentials when asked for a token, or refused a token it
    had just issued: nothing can be called until the app's configuration is fixed. ``message``
    is the platform's own text; ``status`` and ``date`` come from its answer (``date`` is the
    raw ``Date`` header, for a clock check)."""

    message: str = ""
    status: int | None = None
    date: str | None = None


@dataclass(frozen=True)
class Ambiguous:
    """The request may have reached the platform but no usable answer came back (no answer in
    time, HTTP 5xx): a call with an effect must not simply be repeated. ``status`` is None when
    nothing was answered at all."""

    reason: str
    status: int | None = None


@dataclass(frozen=True)
class Unreachable:
    """The call surely did not reach the platform (connection refused, no route, not a valid
    URL, or no token could be had): safe to try again."""

    reason: str


@dataclass(frozen=True)
class Token:
    """An access token the platform issued, good for ``lifetime_s``; ``date`` is the raw
    ``Date`` header of the answer that carried it."""

    value: str = field(repr=False)
    lifetime_s: float
    date: str | None = None


CallResult = Ok | RateLimited | Rejected | Ambiguous | Unreachable
"""A call to a platform API (``CredentialsRefused`` is a ``Rejected``)."""

TokenResult = Token | CredentialsRefused | Unreachable
"""Asking for a token: an answer without one that names no code counts as ``Unreachable``."""
