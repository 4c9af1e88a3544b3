"""The per-month manifest: which objects a (stream, month) holds, their sequence ranges, line
counts, sizes and SHA-256 checksums. Readers trust the manifest, not a listing: an object that
is not in it was never committed (a crash before the manifest was written) and is ignored.

Every object records the *chunk* it was written for: the contiguous range of stream sequences
the archiver committed at once. A chunk's events may fall in several months (late events), so
one chunk may have an object in each of them; ranges of consecutive chunks touch, so the chunks
of a stream prove there is no gap, and rewriting a chunk after a crash replaces its entries
instead of adding new ones."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.layout import Month, manifest_key

FORMAT = 1


class ObjectEntry(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    first_seq: int
    last_seq: int
    count: int
    """Lines in the object: one per archived message."""
    bytes: int
    """Size of the stored (compressed) object."""
    raw_bytes: int
    sha256: str
    """Of the stored object, hex."""
    chunk_first: int
    chunk_last: int
    first_time: str
    """Earliest event time in the object (RFC 3339, in the archive's time zone)."""
    last_time: str


class Manifest(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    stream: str
    month: str
    time_zone: str
    objects: list[ObjectEntry] = msgspec.field(default_factory=list)
    updated: str = ""

    @property
    def events(self) -> int:
        return sum(o.count for o in self.objects)

    @property
    def stored_bytes(self) -> int:
        return sum(o.bytes for o in self.objects)

    def with_chunk(self, chunk_first: int, chunk_last: int, entries: list[ObjectEntry]) -> None:
        """Record a chunk's objects for this month, replacing what an earlier attempt at the
        same chunk recorded (so committing a chunk twice leaves one copy)."""
        kept = [
            o for o in self.objects if (o.chunk_first, o.chunk_last) != (chunk_first, chunk_last)
        ]
        self.objects = sorted([*kept, *entries], key=lambda o: (o.first_seq, o.key))
        self.updated = datetime.now(UTC).isoformat(timespec="milliseconds")


class BadManifest(Exception):
    """A manifest that cannot be read: the text names it."""


_DECODER = msgspec.json.Decoder(Manifest)
_ENCODER = msgspec.json.Encoder()


def encode(manifest: Manifest) -> bytes:
    return msgspec.json.format(_ENCODER.encode(manifest), indent=1) + b"\n"


def decode(raw: bytes, key: str) -> Manifest:
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadManifest(f"manifest {key} is unreadable: {exc}") from None


async def load(store: ObjectStore, stream: str, month: Month) -> Manifest | None:
    key = manifest_key(stream, month)
    raw = await store.get(key)
    return None if raw is None else decode(raw, key)


async def save(store: ObjectStore, manifest: Manifest) -> None:
    await store.put(manifest_key(manifest.stream, Month.parse(manifest.month)), encode(manifest))


class ManifestBook:
    """The manifests of one stream that its (single) writer has touched, read once from the store
    and kept: the writer is the only one changing them."""

    def __init__(self, store: ObjectStore, stream: str, time_zone: str) -> None:
        self.store = store
        self.stream = stream
        self.time_zone = time_zone
        self._open: dict[Month, Manifest] = {}

    async def get(self, month: Month) -> Manifest:
        manifest = self._open.get(month)
        if manifest is None:
            manifest = await load(self.store, self.stream, month) or Manifest(
                stream=self.stream, month=str(month), time_zone=self.time_zone
            )
            self._open[month] = manifest
            # Months other than the two newest are only touched by late events: forget them.
            for old in sorted(self._open)[:-3]:
                if old != month:
                    del self._open[old]
        return manifest
