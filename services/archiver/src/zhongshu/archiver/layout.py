"""Where things live in the archive, and how a month is named. Pure: no I/O.

Below the store's root (``ZHONGSHU_OBJECT_STORE_URL``, ``./data/archive`` by default)::

    <STREAM>/<yyyy>/<mm>/<first-seq>-<last-seq>.jsonl.zst   one object per chunk and month
    <STREAM>/<yyyy>/<mm>/manifest.json                      the month's objects and checksums

Sequence numbers are zero-padded to 20 digits so that names sort in sequence order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final

DEFAULT_STORE_URL: Final = "file://./data/archive"
OBJECT_SUFFIX: Final = ".jsonl.zst"
MANIFEST_NAME: Final = "manifest.json"
SEQ_DIGITS: Final = 20  # a uint64 sequence has at most 20 decimal digits

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_OBJECT = re.compile(
    r"^(?P<stream>[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/"
    r"(?P<first>\d+)-(?P<last>\d+)" + re.escape(OBJECT_SUFFIX) + "$"
)
_MANIFEST = re.compile(
    r"^(?P<stream>[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/" + re.escape(MANIFEST_NAME) + "$"
)


class BadMonth(ValueError):
    """A month given by a user that is not ``YYYY-MM``."""


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month; ordered, so ranges and sorting work."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1 <= self.year <= 9999:
            raise BadMonth(f"no such month: {self.year:04d}-{self.month:02d}")

    @classmethod
    def parse(cls, text: str) -> Month:
        """``2025-01`` → ``Month(2025, 1)``; :class:`BadMonth` naming the expected form."""
        match = _MONTH.match(text.strip())
        if match is None:
            raise BadMonth(f"bad month {text!r}: expected YYYY-MM, e.g. 2025-01")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, moment: datetime, zone: tzinfo) -> Month:
        """The month ``moment`` falls in, seen from ``zone`` (naive datetimes are UTC)."""
        local = moment.astimezone(zone)
        return cls(local.year, local.month)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def start(self, zone: tzinfo) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=zone)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def path(self) -> str:
        return f"{self.year:04d}/{self.month:02d}"


def months_between(first: Month, last: Month) -> list[Month]:
    """Every month from ``first`` to ``last``, both included."""
    if last < first:
        raise BadMonth(f"--to {last} is before --from {first}")
    months = [first]
    while months[-1] < last:
        months.append(months[-1].next())
    return months


def object_key(stream: str, month: Month, first_seq: int, last_seq: int) -> str:
    return (
        f"{stream}/{month.path}/{first_seq:0{SEQ_DIGITS}d}-{last_seq:0{SEQ_DIGITS}d}{OBJECT_SUFFIX}"
    )


def manifest_key(stream: str, month: Month) -> str:
    return f"{stream}/{month.path}/{MANIFEST_NAME}"


def stream_prefix(stream: str) -> str:
    return f"{stream}/"


@dataclass(frozen=True)
class ObjectName:
    """What a data object's key says about it."""

    stream: str
    month: Month
    first_seq: int
    last_seq: int


def parse_object_key(key: str) -> ObjectName | None:
    """The parts of a data object's key, or None for anything else (manifests, strays)."""
    match = _OBJECT.match(key)
    if match is None:
        return None
    return ObjectName(
        match["stream"],
        Month(int(match["year"]), int(match["month"])),
        int(match["first"]),
        int(match["last"]),
    )


def parse_manifest_key(key: str) -> tuple[str, Month] | None:
    match = _MANIFEST.match(key)
    if match is None:
        return None
    return match["stream"], Month(int(match["year"]), int(match["month"]))


class MonthOf:
    """Month of a POSIX timestamp in one zone, remembering the current month's bounds: nearly
    every event of a chunk falls in the same month, and this is asked once per event."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._start = self._end = 0.0
        self._month = Month(1970, 1)

    def __call__(self, ts: float) -> Month:
        if self._start <= ts < self._end:
            return self._month
        local = datetime.fromtimestamp(ts, self.zone)
        month = Month(local.year, local.month)
        self._start = month.start(self.zone).timestamp()
        self._end = month.next().start(self.zone).timestamp()
        self._month = month
        return month
