"""When to try again: jittered exponential backoff and the providers' own hints of when a retry
may succeed. Pure functions, so the policy is tested without a clock or a server."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

BACKOFF_BASE_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_CAP_S = 8.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_EPOCH_S = 1e9  # a reset value this large is a Unix time, not a delay
_EPOCH_MS = 1e12


def backoff_s(round_no: int, random: Callable[[], float]) -> float:
    """Full jitter (uniform in [0, ceiling)): replicas that failed together do not retry
    together. ``round_no`` counts from 0."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * BACKOFF_FACTOR**round_no)
    return max(0.0, random()) * ceiling


def retry_hint_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """How long the provider asks us to wait, in seconds, or None when it gives no hint.

    ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP date) win; otherwise the earliest
    of the ``*ratelimit-reset*`` headers (OpenAI's durations such as ``6m0s``, plain seconds, or
    Unix times), the earliest moment the limit that refused us may have room again."""
    wall = time.time() if now is None else now
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    if (value := _number(lowered.get("retry-after-ms"))) is not None:
        return value / 1000
    if (raw := lowered.get("retry-after")) is not None:
        return _seconds_or_date(raw, wall)
    resets = [
        hint
        for name, raw in lowered.items()
        if "ratelimit-reset" in name and (hint := _reset(raw, wall)) is not None
    ]
    return min(resets) if resets else None


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _seconds_or_date(raw: str, wall: float) -> float | None:
    if (value := _number(raw)) is not None:
        return value
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - wall)


def _reset(raw: str, wall: float) -> float | None:
    if (value := _number(raw)) is not None:
        if value >= _EPOCH_MS:
            return max(0.0, value / 1000 - wall)
        if value >= _EPOCH_S:
            return max(0.0, value - wall)
        return value
    parts = _DURATION_PART.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw.replace(" ", ""):
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(number) * scale[unit] for number, unit in parts)
