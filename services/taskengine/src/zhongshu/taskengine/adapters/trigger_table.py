"""The current triggers, kept in memory from a watch on the `triggers` bucket: matching an event
costs no I/O, and a trigger the gateway writes applies within milliseconds, without a restart.

Every replica holds the same table (it is a cache of the bucket, not state of its own). A
trigger that cannot be used is logged once per revision and left out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from nats.js.kv import KeyValue

from zhongshu.taskengine.triggers import LoadedTrigger, TriggerInvalid, load_trigger

log = logging.getLogger("zhongshu.taskengine.triggers")

REWATCH_DELAY_S = 1.0


class TriggerTable:
    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._triggers: dict[str, LoadedTrigger] = {}
        self.revision = 0
        """The newest bucket revision applied (tests wait for it after writing a trigger)."""
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def triggers(self) -> tuple[LoadedTrigger, ...]:
        return tuple(self._triggers.values())

    async def open(self) -> None:
        """Start watching; returns once the bucket's current content is loaded, so no event
        is matched against an empty table at start-up."""
        self._task = asyncio.create_task(self._watch(), name="trigger-table-watch")
        await self._loaded.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnects, server restarts: watch again from scratch
                log.warning("trigger watch interrupted: %r", exc)
                await asyncio.sleep(REWATCH_DELAY_S)

    async def _follow(self) -> None:
        watcher = await self._bucket.watchall()
        try:
            # A new watch replays every key's latest value first: build the table afresh, so
            # a key deleted while we were not watching does not linger.
            fresh: dict[str, LoadedTrigger] | None = {}
            async for entry in watcher:
                if entry is None:  # the replay is over; what follows are live changes
                    if fresh is not None:
                        self._triggers, fresh = fresh, None
                        self._loaded.set()
                    continue
                table = fresh if fresh is not None else self._triggers
                revision = int(entry.revision or 0)
                if entry.operation is not None or not entry.value:  # deleted or purged
                    table.pop(entry.key, None)
                else:
                    self._apply(table, entry.key, entry.value, revision, entry.created)
                self.revision = max(self.revision, revision)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    @staticmethod
    def _apply(
        table: dict[str, LoadedTrigger],
        key: str,
        value: bytes,
        revision: int,
        created: object,
    ) -> None:
        written_at = created if isinstance(created, datetime) else datetime.now(UTC)
        try:
            table[key] = load_trigger(key, value, revision, written_at)
        except TriggerInvalid as exc:
            table.pop(key, None)
            log.error("ignoring trigger revision %d: %s", revision, exc)
