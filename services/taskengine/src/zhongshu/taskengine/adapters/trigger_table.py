"""The current triggers, kept in memory from a watch on the `triggers` bucket: matching an event
costs no I/O, and a trigger the gateway writes applies within milliseconds, without a restart.

Every replica holds the same table (it is a cache of the bucket, not state of its own). A
trigger that cannot be used is logged once per revision and left out."""

from __future__ import annotations

from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.contracts.streams import TRIGGERS_KV
from zhongshu.runtime.buckets import WatchedBucket, written_at
from zhongshu.taskengine.triggers import LoadedTrigger, load_trigger

REWATCH_DELAY_S = 1.0


def _load(entry: KeyValue.Entry) -> LoadedTrigger:
    revision = int(entry.revision or 0)
    return load_trigger(entry.key, entry.value or b"", revision, written_at(entry))


class TriggerTable:
    def __init__(self, js: JetStreamContext) -> None:
        self._watched = WatchedBucket(
            js,
            TRIGGERS_KV.bucket,
            decode_entry=_load,
            name="trigger-table-watch",
            restart_delay_s=REWATCH_DELAY_S,
        )

    @property
    def triggers(self) -> tuple[LoadedTrigger, ...]:
        return tuple(self._watched.values())

    @property
    def revision(self) -> int:
        """The newest bucket revision applied (tests wait for it after writing a trigger)."""
        return self._watched.revision

    async def open(self) -> None:
        """Start watching; returns once the bucket's current content is loaded, so no event
        is matched against an empty table at start-up."""
        self._watched.start()
        await self._watched.ready.wait()

    async def close(self) -> None:
        await self._watched.stop()
