"""Verify the archive: every object its manifest lists is there, matches its SHA-256, decodes,
holds the lines the entry says (count, first and last sequence, ascending, inside its chunk);
across a stream's months the chunks follow each other without a gap or an overlap, and no
sequence is archived twice. Objects no manifest lists are reported as strays (left by a crash
before the manifest was written; harmless, and never read)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from zhongshu.archiver import catalog
from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.layout import Month, parse_object_key, stream_prefix
from zhongshu.archiver.manifest import BadManifest, ObjectEntry
from zhongshu.archiver.reader import CorruptObject, read_object

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    stream: str
    what: str
    detail: str


@dataclass
class StreamResult:
    stream: str
    months: int = 0
    objects: int = 0
    events: int = 0
    stored_bytes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    chunks_checked: bool = False


@dataclass
class VerifyReport:
    streams: dict[str, StreamResult] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Work:
    """What verify will read (for a progress bar's total)."""

    summaries: list[catalog.MonthSummary]

    @property
    def objects(self) -> int:
        return sum(s.objects for s in self.summaries)

    @property
    def stored_bytes(self) -> int:
        return sum(s.stored_bytes for s in self.summaries)


async def plan(store: ObjectStore, stream: str | None, month: Month | None) -> Work:
    if stream is not None:
        await catalog.require_stream(store, stream)
    return Work(await catalog.months(store, stream, month, month))


async def verify(
    store: ObjectStore,
    work: Work,
    *,
    whole_streams: bool,
    progress: Callable[[ObjectEntry], None] | None = None,
) -> VerifyReport:
    """Check ``work``; chunk continuity only when ``whole_streams`` (every month of each stream
    is in ``work``: a month alone may miss chunks whose events all fell in other months)."""
    report = VerifyReport()
    chunks: dict[str, dict[tuple[int, int], list[ObjectEntry]]] = defaultdict(dict)
    for summary in work.summaries:
        for entry in summary.manifest.objects:
            chunk = (entry.chunk_first, entry.chunk_last)
            chunks[summary.stream].setdefault(chunk, []).append(entry)
    listed: set[str] = set()
    # Objects of one chunk in different months could repeat a sequence between them: keep the
    # sequences of those chunks only (late events make them rare) to compare.
    split_chunk_seqs: dict[tuple[str, int, int], list[int]] = {
        (stream, *chunk): []
        for stream, by_chunk in chunks.items()
        for chunk, entries in by_chunk.items()
        if len(entries) > 1
    }
    for summary in work.summaries:
        result = report.streams.setdefault(summary.stream, StreamResult(summary.stream))
        result.months += 1
        for entry in summary.manifest.objects:
            listed.add(entry.key)
            seqs = await _check_object(store, summary.stream, summary.month, entry, report)
            if seqs is not None:
                split = split_chunk_seqs.get((summary.stream, entry.chunk_first, entry.chunk_last))
                if split is not None:
                    split.extend(seqs)
                result.objects += 1
                result.events += len(seqs)
                result.stored_bytes += entry.bytes
                result.first_seq = min(result.first_seq or entry.first_seq, entry.first_seq)
                result.last_seq = max(result.last_seq or entry.last_seq, entry.last_seq)
            if progress is not None:
                progress(entry)
    for (stream, first, last), seqs in split_chunk_seqs.items():
        if len(seqs) != len(set(seqs)):
            report.problems.append(
                Problem("error", stream, "duplicate", f"chunk {first}-{last} repeats a sequence")
            )
    if whole_streams:
        for stream, by_chunk in chunks.items():
            _check_chunks(stream, sorted(by_chunk), report)
            report.streams[stream].chunks_checked = True
    await _find_strays(store, work, listed, report)
    return report


async def _check_object(
    store: ObjectStore, stream: str, month: Month, entry: ObjectEntry, report: VerifyReport
) -> list[int] | None:
    def problem(what: str, detail: str) -> None:
        report.problems.append(Problem("error", stream, what, f"{entry.key}: {detail}"))

    named = parse_object_key(entry.key)
    if named is None or named.stream != stream or named.month != month:
        problem("misplaced", f"listed in the manifest of {stream} {month}")
    try:
        lines = await read_object(store, entry)
    except (CorruptObject, BadManifest) as exc:
        report.problems.append(Problem("error", stream, "corrupt", str(exc)))
        return None
    seqs = [line.seq for line in lines]
    if len(seqs) != entry.count:
        problem("count", f"{len(seqs)} lines, manifest says {entry.count}")
    if seqs and (seqs[0] != entry.first_seq or seqs[-1] != entry.last_seq):
        problem(
            "range",
            f"holds {seqs[0]}-{seqs[-1]}, manifest says {entry.first_seq}-{entry.last_seq}",
        )
    if any(b <= a for a, b in itertools.pairwise(seqs)):
        problem("order", "sequences are not strictly ascending (a duplicate or a reorder)")
    if seqs and (seqs[0] < entry.chunk_first or seqs[-1] > entry.chunk_last):
        problem("range", f"lines outside its chunk {entry.chunk_first}-{entry.chunk_last}")
    return seqs


def _check_chunks(stream: str, ranges: list[tuple[int, int]], report: VerifyReport) -> None:
    for (_, prev_last), (first, last) in itertools.pairwise(ranges):
        if first > prev_last + 1:
            report.problems.append(
                Problem(
                    "error",
                    stream,
                    "gap",
                    f"sequences {prev_last + 1}-{first - 1} are in no chunk",
                )
            )
        elif first <= prev_last:
            report.problems.append(
                Problem(
                    "error",
                    stream,
                    "overlap",
                    f"chunk {first}-{last} overlaps the one ending at {prev_last}",
                )
            )


async def _find_strays(
    store: ObjectStore, work: Work, listed: set[str], report: VerifyReport
) -> None:
    prefixes = sorted({f"{stream_prefix(s.stream)}{s.month.path}/" for s in work.summaries})
    for prefix in prefixes:
        for obj in await store.list(prefix):
            if parse_object_key(obj.key) is not None and obj.key not in listed:
                report.problems.append(
                    Problem(
                        "warning",
                        obj.key.split("/", 1)[0],
                        "stray",
                        f"{obj.key} is in no manifest (a write interrupted before its manifest; "
                        "never read, safe to delete)",
                    )
                )
