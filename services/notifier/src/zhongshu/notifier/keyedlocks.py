"""One asyncio lock per key, kept only while somebody holds or waits for it: the chunks of one
streamed reply are handled one at a time within a process, without a lock per reply ever
seen staying in memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def busy(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold ``key``'s lock for the block (True); with ``wait=False`` and the lock held
        by another task, run the block at once without it (False)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        elif not wait and entry.lock.locked():
            yield False
            return
        entry.users += 1
        try:
            async with entry.lock:
                yield True
        finally:
            entry.users -= 1
            if not entry.users:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
