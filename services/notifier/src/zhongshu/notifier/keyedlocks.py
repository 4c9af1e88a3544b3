"""One asyncio lock per key, kept only while somebody holds or waits for it: the chunks of one
streamed reply are handled one at a time within a process, without a lock per reply ever
seen staying in memory. A holder may leave a note for the next one (``memo``), which goes
with the lock when nobody is left."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Held:
    __slots__ = ("lock", "memo", "users", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        self.waiting = 0
        self.memo: object = None

    @property
    def awaited(self) -> bool:
        """Another task waits for this key (one that asked to wait, not to be skipped)."""
        return self.waiting > 0


class KeyedLocks:
    def __init__(self) -> None:
        self._entries: dict[str, Held] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: bool = True) -> AsyncIterator[Held | None]:
        """Hold ``key``'s lock for the block; with ``wait=False`` and the lock held by
        another task, run the block at once without it (None)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Held()
        elif not wait and entry.lock.locked():
            yield None
            return
        entry.users += 1
        try:
            if wait:
                entry.waiting += 1
                try:
                    await entry.lock.acquire()
                finally:
                    entry.waiting -= 1
            else:
                await entry.lock.acquire()
            try:
                yield entry
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if not entry.users:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
