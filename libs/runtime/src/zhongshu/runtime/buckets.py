"""A NATS KV bucket held in memory and kept current by a watch: reading it costs no I/O, and a
write to the bucket applies within milliseconds, without a restart.

Each entry is decoded by the caller's decoder (``msgspec.json.Decoder(T).decode``, a pydantic
model's ``model_validate_json``, or one that reads the whole entry); one that does not decode is
logged and left out, as is a deleted or purged key. A broken watch is started again, with
backoff, and reads the bucket afresh: what it held is replaced only once the new read is
complete, so a key deleted meanwhile does not linger and readers never see a half-read
bucket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast

from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.runtime.periodic import Periodic

log = logging.getLogger("zhongshu.runtime.buckets")

T = TypeVar("T")
Entry = KeyValue.Entry
OnEntry = Callable[[Entry, T | None], Awaitable[None]]


def written_at(entry: Entry) -> datetime:
    """When the entry was stored, by the bus's clock (now, if the entry does not say)."""
    created = entry.created
    if isinstance(created, datetime):
        return created if created.tzinfo else created.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _by_value(decode: Callable[[bytes], T]) -> Callable[[Entry], T]:
    def decode_entry(entry: Entry) -> T:
        return decode(entry.value or b"")

    return decode_entry


@dataclass(frozen=True, slots=True)
class Held(Generic[T]):
    """A key's current value and where it comes from."""

    value: T
    revision: int
    written_at: datetime
    """When this revision was stored (the bus's clock)."""
    created_at: datetime
    """When the key was created: its first revision since it was last absent. Without
    ``include_history`` a key present when the watch starts counts from its latest revision."""


class WatchedBucket(Generic[T]):
    """The current entries of ``bucket`` (those under ``keys``), decoded.

    - ``ready`` is set once the entries stored when the watch began are read (and stays set
      across restarts): before it, an empty bucket means nothing.
    - ``revision`` is the newest bucket revision that the held values reflect (a test that wrote
      revision N waits for ``revision >= N``).
    - ``on_entry(entry, value)``, if given, is awaited for every entry the watch delivers, in
      order, the replay of a restarted watch included (``value`` is None for a delete, a purge or
      a value that does not decode); an exception it raises restarts the watch.
    - ``include_history`` replays every stored revision, not only the latest of each key.
    """

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        decode: Callable[[bytes], T] | None = None,
        *,
        decode_entry: Callable[[Entry], T] | None = None,
        keys: str = ">",
        include_history: bool = False,
        on_entry: OnEntry[T] | None = None,
        name: str | None = None,
        restart_delay_s: float = 1.0,
        max_restart_delay_s: float = 30.0,
    ) -> None:
        if decode is not None and decode_entry is not None:
            raise ValueError("give decode or decode_entry, not both")
        self._js = js
        self.bucket = bucket
        self.name = name or f"watch:{bucket}"
        self._decode = decode_entry or _by_value(decode or cast(Callable[[bytes], T], bytes))
        self._keys = keys
        self._include_history = include_history
        self._on_entry = on_entry
        self._restart_delay_s = restart_delay_s
        self._max_restart_delay_s = max(restart_delay_s, max_restart_delay_s)
        self._held: dict[str, Held[T]] = {}
        self.revision = 0
        self.ready = asyncio.Event()
        self._read_through = False  # the current watch delivered its initial read
        self._backoff = self._wait = restart_delay_s
        # One watch per run; a run ends when its watch breaks, and the next one comes after
        # the backoff (which a stop cuts short).
        self._loop = Periodic(self.name, lambda: self._wait, self._watch)

    # ------------------------------------------------------------------ reading

    def get(self, key: str) -> T | None:
        held = self._held.get(key)
        return held.value if held is not None else None

    def held(self, key: str) -> Held[T] | None:
        return self._held.get(key)

    def values(self) -> list[T]:
        return [held.value for held in self._held.values()]

    @property
    def entries(self) -> Mapping[str, Held[T]]:
        """Every held key, read-only (a view of the current read: take a copy to keep it)."""
        return MappingProxyType(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    # ---------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        self._loop.start()

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait for the initial read, at most ``timeout_s``; whether it is done."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        return self.ready.is_set()

    async def stop(self) -> None:
        """End the watch, an ``on_entry`` in progress included."""
        await self._loop.stop()

    async def __aenter__(self) -> WatchedBucket[T]:
        self.start()
        await self.ready.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ the loop

    async def _watch(self) -> None:
        problem: Exception | None = None
        try:
            await self._follow()
        except Exception as exc:  # reconnects, server restarts, a missing bucket
            problem = exc
        if self._loop.stopping:
            return
        if self._read_through:  # it worked for a while: start the backoff over
            self._backoff = self._restart_delay_s
        self._wait, self._backoff = self._backoff, min(self._backoff * 2, self._max_restart_delay_s)
        what = f"interrupted: {problem!r}" if problem is not None else "ended"
        log.warning("%s %s; watching again in %.1fs", self.name, what, self._wait)

    async def _follow(self) -> None:
        """One watch, until it breaks or the stop."""
        self._read_through = False
        kv = await self._js.key_value(self.bucket)
        watcher = await kv.watch(self._keys, include_history=self._include_history)
        fresh: dict[str, Held[T]] | None = {}  # the initial read, swapped in when complete
        fresh_revision = 0
        try:
            async for entry in watcher:
                if self._loop.stopping:
                    break
                if entry is None:  # the end of what was stored when the watch began
                    if fresh is not None:
                        self._held, self.revision, fresh = fresh, fresh_revision, None
                        self._read_through = True
                        self.ready.set()
                    continue
                revision = int(entry.revision or 0)
                value = self._apply(fresh if fresh is not None else self._held, entry, revision)
                if fresh is not None:
                    fresh_revision = max(fresh_revision, revision)
                else:
                    self.revision = max(self.revision, revision)
                if self._on_entry is not None:
                    await self._on_entry(entry, value)
                    if self._loop.stopping:  # the cancellation may have been swallowed
                        break
        finally:
            with contextlib.suppress(Exception):
                await cast(Any, watcher).stop()  # untyped in nats-py

    def _apply(self, held: dict[str, Held[T]], entry: Entry, revision: int) -> T | None:
        key = entry.key
        if entry.operation is not None or not entry.value:  # deleted, purged or emptied
            held.pop(key, None)
            return None
        try:
            value = self._decode(entry)
        except Exception as exc:
            log.error("%s: ignoring %s (revision %d): %s", self.name, key, revision, exc)
            held.pop(key, None)
            return None
        at = written_at(entry)
        previous = held.get(key)
        held[key] = Held(value, revision, at, previous.created_at if previous is not None else at)
        return value
