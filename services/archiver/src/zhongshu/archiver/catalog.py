"""What the archive holds, read from its manifests: per stream and month, the objects, event
counts, sizes and sequence ranges. Used by ``zhongshu archive ls``, ``verify`` and ``restore``."""

from __future__ import annotations

from dataclasses import dataclass

from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.layout import Month, parse_manifest_key, stream_prefix
from zhongshu.archiver.manifest import Manifest, decode


class UnknownStream(LookupError):
    """A stream with nothing in the archive; the text lists those that have something."""


@dataclass(frozen=True)
class MonthSummary:
    stream: str
    month: Month
    manifest: Manifest

    @property
    def objects(self) -> int:
        return len(self.manifest.objects)

    @property
    def events(self) -> int:
        return self.manifest.events

    @property
    def stored_bytes(self) -> int:
        return self.manifest.stored_bytes

    @property
    def raw_bytes(self) -> int:
        return sum(o.raw_bytes for o in self.manifest.objects)

    @property
    def first_seq(self) -> int | None:
        return min((o.first_seq for o in self.manifest.objects), default=None)

    @property
    def last_seq(self) -> int | None:
        return max((o.last_seq for o in self.manifest.objects), default=None)


async def manifest_keys(store: ObjectStore, stream: str | None = None) -> list[tuple[str, Month]]:
    """(stream, month) of every manifest, sorted."""
    found = []
    for obj in await store.list(stream_prefix(stream) if stream else ""):
        parsed = parse_manifest_key(obj.key)
        if parsed is not None:
            found.append(parsed)
    return sorted(found, key=lambda p: (p[0], p[1]))


async def months(
    store: ObjectStore,
    stream: str | None = None,
    first: Month | None = None,
    last: Month | None = None,
) -> list[MonthSummary]:
    """The manifests of ``stream`` (or all streams) between ``first`` and ``last`` (inclusive)."""
    summaries = []
    for name, month in await manifest_keys(store, stream):
        if (first is not None and month < first) or (last is not None and month > last):
            continue
        key = f"{stream_prefix(name)}{month.path}/manifest.json"
        raw = await store.get(key)
        if raw is not None:
            summaries.append(MonthSummary(name, month, decode(raw, key)))
    return summaries


async def archived_streams(store: ObjectStore) -> list[str]:
    return sorted({name for name, _ in await manifest_keys(store)})


async def require_stream(store: ObjectStore, stream: str) -> None:
    """:class:`UnknownStream` unless the archive has at least one month of ``stream``."""
    if await manifest_keys(store, stream):
        return
    known = await archived_streams(store)
    listing = ", ".join(known) if known else "none yet"
    raise UnknownStream(
        f"nothing archived for stream {stream!r} in {store.url}; archived: {listing}"
    )
