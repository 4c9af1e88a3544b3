"""Reading archived messages back: one object checked against its manifest entry, or many
objects merged into stream-sequence order (late events put one chunk's lines into earlier
months, so the objects of a month range interleave)."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from collections.abc import AsyncIterator, Iterable

import msgspec
import zstandard

from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.lines import ArchivedMessage, decode_lines
from zhongshu.archiver.manifest import ObjectEntry
from zhongshu.archiver.writer import decompress

_END = 1 << 64  # past any stream sequence


class CorruptObject(Exception):
    """An object missing, or not matching its manifest entry; the text says how."""


def decode_object(entry: ObjectEntry, data: bytes) -> list[ArchivedMessage]:
    """The lines of an object after checking its checksum (CPU-bound: run it in a thread)."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise CorruptObject(f"{entry.key}: sha256 {digest} does not match the manifest")
    try:
        return decode_lines(decompress(data))
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise CorruptObject(f"{entry.key}: unreadable: {exc}") from None


async def read_object(store: ObjectStore, entry: ObjectEntry) -> list[ArchivedMessage]:
    data = await store.get(entry.key)
    if data is None:
        raise CorruptObject(f"{entry.key}: listed in the manifest but missing from the store")
    return await asyncio.to_thread(decode_object, entry, data)


async def in_sequence(
    store: ObjectStore, entries: Iterable[ObjectEntry]
) -> AsyncIterator[ArchivedMessage]:
    """Every line of ``entries`` in sequence order, reading an object only once the merge needs
    it (so memory holds the objects that overlap, not all of them)."""
    pending = sorted(entries, key=lambda e: (e.first_seq, e.key))
    heap: list[tuple[int, int, int, list[ArchivedMessage]]] = []
    opened = 0
    while heap or opened < len(pending):
        while opened < len(pending) and (not heap or pending[opened].first_seq <= heap[0][0]):
            lines = await read_object(store, pending[opened])
            if lines:
                heapq.heappush(heap, (lines[0].seq, opened, 0, lines))
            opened += 1
        if not heap:
            continue
        _, index, position, lines = heapq.heappop(heap)
        # Yield this object's lines up to the next sequence another object starts at: usually
        # the whole object, as months rarely interleave.
        limit = heap[0][0] if heap else _END
        if opened < len(pending):
            limit = min(limit, pending[opened].first_seq)
        end = position + 1
        while end < len(lines) and lines[end].seq < limit:
            end += 1
        for line in lines[position:end]:
            yield line
        if end < len(lines):
            heapq.heappush(heap, (lines[end].seq, index, end, lines))
