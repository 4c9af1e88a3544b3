"""When a schedule fires, in the notation nats-server's message schedules read (ADR-51): a cron
with seconds first (`sec min hour dom month dow`), a predefined `@hourly`..., or `@every <Go
duration>`. The API also takes the familiar 5-field cron and adds the seconds itself. Next fire
times are computed here with croniter in the schedule's own time zone, as the server does."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

PREDEFINED: Final = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
MIN_EVERY_S: Final = 1.0
"""The server refuses shorter intervals."""

_FIELD = re.compile(r"^[0-9A-Za-z*/,?-]+$")
_GO_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class InvalidSchedule(ValueError):
    """The expression or time zone cannot be used; the text says why."""


@dataclass(frozen=True)
class Cadence:
    spec: str
    """The `Nats-Schedule` header value."""
    cron: str | None = None
    """Six fields, seconds first, for croniter; None for an interval."""
    every_s: float | None = None


def parse(expression: str, time_zone: str | None = None) -> Cadence:
    text = " ".join(expression.split())
    if text.startswith("@every"):
        if time_zone:
            raise InvalidSchedule("a time zone applies to cron schedules, not to @every")
        return Cadence(spec=text, every_s=go_duration_s(text[len("@every") :].strip()))
    if time_zone is not None:
        zone(time_zone)
    if text in PREDEFINED:
        return Cadence(spec=text, cron=PREDEFINED[text])
    if text.startswith("@"):
        known = ", ".join([*PREDEFINED, "@every <duration>"])
        raise InvalidSchedule(f"unknown schedule {text.split()[0]!r}; use one of {known}")
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]  # the server's cron has seconds first
    if len(fields) != 6:
        raise InvalidSchedule(
            "a cron expression has 5 fields (min hour dom month dow) or 6 (sec first), "
            f"not {len(fields)}"
        )
    bad = [f for f in fields if not _FIELD.fullmatch(f)]
    if bad:
        raise InvalidSchedule(f"cron field {bad[0]!r} has characters cron does not use")
    cron = " ".join(fields)
    if not croniter.is_valid(cron, second_at_beginning=True):
        raise InvalidSchedule(f"{text!r} is not a valid cron expression")
    return Cadence(spec=cron, cron=cron)


def go_duration_s(text: str) -> float:
    """Seconds in a Go duration (`90s`, `1h30m`, `1.5h`), at least one second."""
    if not _GO_DURATION.fullmatch(text):
        raise InvalidSchedule(f"@every needs a duration like 30s, 5m or 1h30m, not {text!r}")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in _GO_PART.findall(text))
    if seconds < MIN_EVERY_S:
        raise InvalidSchedule("@every must be at least 1s")
    return seconds


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown time zone {name!r} (use an IANA name)") from None


def next_fire(
    cadence: Cadence, *, time_zone: str | None, now: datetime, since: datetime
) -> datetime:
    """The next firing after ``now`` (UTC): cron times in the schedule's zone; intervals
    counted from ``since``, when the server stored the schedule."""
    if cadence.every_s is not None:
        step = cadence.every_s
        elapsed = max((now - since).total_seconds(), 0.0)
        return since + timedelta(seconds=(math.floor(elapsed / step) + 1) * step)
    assert cadence.cron is not None
    local = now.astimezone(zone(time_zone) if time_zone else UTC)
    upcoming: datetime = croniter(cadence.cron, local, second_at_beginning=True).get_next(datetime)
    return upcoming.astimezone(UTC)
