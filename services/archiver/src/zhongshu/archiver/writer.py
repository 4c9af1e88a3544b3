"""A chunk (a contiguous range of one stream's sequences) collected line by line, then turned
into one compressed object per month it touches, with the manifest entry of each. No I/O: the
drain writes what this prepares.

The same messages always give the same bytes (zstd is deterministic for a given level), so a
chunk rewritten after a crash replaces its objects with identical ones under the same names."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

import zstandard

from zhongshu.archiver.layout import Month, object_key
from zhongshu.archiver.manifest import ObjectEntry


class MonthLines:
    """The lines of one chunk that belong to one month, in sequence order."""

    __slots__ = ("first_seq", "last_seq", "lines", "max_ts", "min_ts", "raw_bytes")

    def __init__(self, seq: int, ts: float) -> None:
        self.lines: list[bytes] = []
        self.first_seq = self.last_seq = seq
        self.min_ts = self.max_ts = ts
        self.raw_bytes = 0

    def add(self, seq: int, ts: float, line: bytes) -> None:
        self.lines.append(line)
        self.last_seq = seq
        self.raw_bytes += len(line) + 1
        if ts < self.min_ts:
            self.min_ts = ts
        elif ts > self.max_ts:
            self.max_ts = ts


@dataclass
class Chunk:
    """Lines collected for the range ``first_seq`` .. ``last_seq``. ``last_seq`` may lie past the
    last line (messages deleted from the stream still belong to the range that covers them)."""

    stream: str
    first_seq: int
    last_seq: int = 0
    months: dict[Month, MonthLines] = field(default_factory=dict)
    count: int = 0
    raw_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.last_seq = self.first_seq - 1

    def add(self, seq: int, month: Month, ts: float, line: bytes) -> None:
        lines = self.months.get(month)
        if lines is None:
            lines = self.months[month] = MonthLines(seq, ts)
        lines.add(seq, ts, line)
        self.last_seq = seq
        self.count += 1
        self.raw_bytes += len(line) + 1

    def cover(self, last_seq: int) -> None:
        """Extend the range over sequences that hold no message (deleted or never stored)."""
        self.last_seq = max(self.last_seq, last_seq)

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class PreparedObject:
    month: Month
    data: bytes
    entry: ObjectEntry


def prepare(chunk: Chunk, zone: tzinfo, level: int) -> list[PreparedObject]:
    """Compress each month's lines and describe the result (runs in a worker thread: zstd and
    hashlib release the GIL, so the drain keeps fetching meanwhile)."""
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    prepared = []
    for month in sorted(chunk.months):
        lines = chunk.months[month]
        raw = b"\n".join(lines.lines) + b"\n"
        data = compressor.compress(raw)
        key = object_key(chunk.stream, month, lines.first_seq, lines.last_seq)
        prepared.append(
            PreparedObject(
                month,
                data,
                ObjectEntry(
                    key=key,
                    first_seq=lines.first_seq,
                    last_seq=lines.last_seq,
                    count=len(lines.lines),
                    bytes=len(data),
                    raw_bytes=len(raw),
                    sha256=hashlib.sha256(data).hexdigest(),
                    chunk_first=chunk.first_seq,
                    chunk_last=chunk.last_seq,
                    first_time=_iso(lines.min_ts, zone),
                    last_time=_iso(lines.max_ts, zone),
                ),
            )
        )
    return prepared


def _iso(ts: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="milliseconds")


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)
