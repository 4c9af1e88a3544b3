"""The archive's resume point, one key per stream in the NATS KV bucket ``archive``:
``{"archived": N, "pending": [first, last] | null}``.

``archived`` is the last stream sequence whose chunk is fully committed (objects and manifests
written); the drain resumes after it, whatever the consumer's ack floor says. ``pending`` is the
chunk being written: recorded *before* its objects, so a restart after a crash rewrites exactly
that range, under the same names, instead of a slightly different one next to the first try.

Every write names the revision it read (compare-and-set): a second archiver writing the same
stream makes the other's next write fail instead of interleaving two histories."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.contracts.streams import ARCHIVE_KV
from zhongshu.runtime.errors import RuntimeFailure


class StateConflict(Exception):
    """Someone else changed the stream's archive state since we read it."""


class _Stored(msgspec.Struct, kw_only=True, omit_defaults=False):
    archived: int = 0
    pending: tuple[int, int] | None = None


@dataclass(frozen=True)
class ArchiveState:
    stream: str
    archived: int
    pending: tuple[int, int] | None
    revision: int
    """KV revision this was read at (0: the key does not exist yet)."""


_DECODER = msgspec.json.Decoder(_Stored)


class StateStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> StateStore:
        try:
            return cls(await js.key_value(ARCHIVE_KV.bucket))
        except nats.js.errors.BucketNotFoundError:
            raise RuntimeFailure(
                f"KV bucket {ARCHIVE_KV.bucket!r} is missing: run `zhongshu provision`"
            ) from None

    async def load(self, stream: str) -> ArchiveState:
        try:
            entry = await self.kv.get(stream)
        except nats.js.errors.KeyNotFoundError:
            return ArchiveState(stream, 0, None, 0)
        stored = _DECODER.decode(entry.value or b"{}")
        return ArchiveState(stream, stored.archived, stored.pending, int(entry.revision or 0))

    async def begin(self, state: ArchiveState, first: int, last: int) -> ArchiveState:
        """Record the chunk about to be written."""
        return await self._write(state, state.archived, (first, last))

    async def commit(self, state: ArchiveState, last: int) -> ArchiveState:
        """Everything up to ``last`` is in the archive."""
        return await self._write(state, last, None)

    async def start_at(self, state: ArchiveState, archived: int) -> ArchiveState:
        """First run on a stream: nothing before ``archived`` is ours to archive (older events
        left the bus before the archiver existed)."""
        return await self._write(state, archived, None)

    async def _write(
        self, state: ArchiveState, archived: int, pending: tuple[int, int] | None
    ) -> ArchiveState:
        value = msgspec.json.encode(_Stored(archived=archived, pending=pending))
        try:
            if state.revision:
                revision = await self.kv.update(state.stream, value, last=state.revision)
            else:
                revision = await self.kv.create(state.stream, value)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise StateConflict(
                f"archive state of {state.stream} changed under us (another archiver?): {exc}"
            ) from None
        return ArchiveState(state.stream, archived, pending, int(revision))
