"""The robot HTTP callback's signature: ``sign = base64(HMAC-SHA256(appSecret, timestamp + "\\n"
+ appSecret))`` with ``timestamp`` in ms, accepted within a skew window (protocols §2.1).

The sign does not cover the body, so a captured pair replays for the whole window; the dedupe
on ``msgId`` is what keeps a replay from becoming a second event."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

MAX_SKEW_MS = 60 * 60 * 1000


def callback_sign(timestamp: str, app_secret: str) -> str:
    """The ``sign`` header DingTalk sends with a callback stamped ``timestamp`` (ms)."""
    digest = hmac.new(
        app_secret.encode(), f"{timestamp}\n{app_secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


class SignatureInvalid(Exception):
    """The callback's ``timestamp``/``sign`` pair is missing, malformed, stale or wrong;
    ``reason`` says which (a short label, never the values)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_callback(
    timestamp: str | None,
    sign: str | None,
    app_secret: str,
    *,
    now_ms: int | None = None,
    max_skew_ms: int = MAX_SKEW_MS,
) -> None:
    """Raise :class:`SignatureInvalid` unless ``sign`` is DingTalk's for ``timestamp`` and the
    timestamp is within ``max_skew_ms`` of ``now_ms``. Both must pass."""
    if not timestamp or not sign:
        raise SignatureInvalid("missing signature")
    # isdigit alone also takes digits int() refuses ("²"): a 500 before any check, found by fuzzing.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15:
        raise SignatureInvalid("bad timestamp")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if abs(now - int(timestamp)) > max_skew_ms:
        raise SignatureInvalid("timestamp outside window")
    expected = callback_sign(timestamp, app_secret)
    if not hmac.compare_digest(expected.encode(), sign.strip().encode("utf-8", "replace")):
        raise SignatureInvalid("bad signature")
