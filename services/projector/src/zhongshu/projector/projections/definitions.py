"""The ``triggers`` and ``subscriptions`` KV buckets → tables of the same names, for SQL reporting
and joins (the buckets stay the source of truth, which the task engine and the notifier watch).

A KV entry's revision is its sequence in the bucket's stream, so the revision plays the part
``last_seq`` plays elsewhere: an entry applies only when its revision is newer. A delete or purge
keeps the last definition and sets ``deleted``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final

import asyncpg
import msgspec
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.contracts import streams
from zhongshu.projector import metrics
from zhongshu.projector.db import connection
from zhongshu.projector.projections import written
from zhongshu.projector.records import to_json
from zhongshu.projector.writer import LOCK_SHARED, advance, retrying
from zhongshu.runtime.buckets import WatchedBucket, written_at

log = logging.getLogger("zhongshu.projector.definitions")

_DELETES: Final = frozenset({"DEL", "PURGE"})
RESTART_DELAY_S = 2.0


@dataclass(frozen=True)
class Mirror:
    """One bucket mirrored into one table."""

    bucket: str
    table: str
    id_column: str

    @property
    def stream(self) -> str:
        """The bucket's stream: the key of its row in ``projection_offsets``."""
        return f"KV_{self.bucket}"

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table,)

    @property
    def upsert(self) -> str:
        return f"""
INSERT INTO {self.table} AS d (tenant, {self.id_column}, definition, deleted, revision, updated_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6)
ON CONFLICT (tenant, {self.id_column}) DO UPDATE SET
    definition = CASE WHEN EXCLUDED.deleted THEN d.definition ELSE EXCLUDED.definition END,
    deleted = EXCLUDED.deleted,
    revision = EXCLUDED.revision,
    updated_at = EXCLUDED.updated_at
WHERE d.revision < EXCLUDED.revision
"""


TRIGGERS: Final = Mirror(streams.TRIGGERS_KV.bucket, "triggers", "trigger_id")
SUBSCRIPTIONS: Final = Mirror(streams.SUBSCRIPTIONS_KV.bucket, "subscriptions", "subscription_id")
MIRRORS: Final = (TRIGGERS, SUBSCRIPTIONS)


@dataclass(frozen=True, slots=True)
class DefinitionChange:
    tenant: str
    definition_id: str
    revision: int
    at: datetime
    definition: str
    deleted: bool


def plan(entry: KeyValue.Entry) -> DefinitionChange | None:
    """The row an entry asks for; None for a key that is not ``<tenant>.<id>`` or a value that
    is not JSON (logged: the bucket's writers validate, so this is somebody else's key)."""
    tenant, _, definition_id = entry.key.partition(".")
    if not tenant or not definition_id:
        log.warning("%s: key %r is not <tenant>.<id>; skipped", entry.bucket, entry.key)
        return None
    deleted = entry.operation in _DELETES
    definition = "{}"
    if not deleted:
        try:
            value: Any = msgspec.json.decode(entry.value or b"")
        except msgspec.DecodeError:
            log.warning("%s: %s is not JSON; skipped", entry.bucket, entry.key)
            return None
        definition = to_json(value)
    at = written_at(entry)
    return DefinitionChange(
        tenant, definition_id, int(entry.revision or 0), at, definition, deleted
    )


async def apply(conn: asyncpg.Connection, mirror: Mirror, change: DefinitionChange) -> int:
    """Write one change and advance the bucket's offset, in the caller's transaction."""
    status = await conn.execute(
        mirror.upsert, change.tenant, change.definition_id, change.definition, change.deleted,
        change.revision, change.at,
    )  # fmt: skip
    await advance(conn, mirror.stream, change.revision)
    return written(status)


class MirrorWatcher:
    """Keeps one table in step with its bucket: the current entries first, then every change.
    A broken watch starts over (the revision guard makes that harmless)."""

    def __init__(self, js: JetStreamContext, pool: asyncpg.Pool, mirror: Mirror) -> None:
        self.mirror = mirror
        self._pool = pool
        # Raw values: each entry is planned (a delete too) and written as it comes.
        self._watched: WatchedBucket[bytes] = WatchedBucket(
            js,
            mirror.bucket,
            include_history=True,
            on_entry=self._entry,
            name=f"mirror:{mirror.bucket}",
            restart_delay_s=RESTART_DELAY_S,
        )
        self.synced = self._watched.ready
        """Set once the entries present at the start of a watch are written."""

    def start(self) -> None:
        self._watched.start()

    async def stop(self) -> None:
        await self._watched.stop()

    async def _entry(self, entry: KeyValue.Entry, _value: bytes | None) -> None:
        change = plan(entry)
        if change is not None:
            await retrying(f"mirror {self.mirror.bucket}", partial(self._write, change))

    async def _write(self, change: DefinitionChange) -> None:
        async with connection(self._pool) as conn, conn.transaction():
            await conn.execute(LOCK_SHARED, self.mirror.stream)
            rows = await apply(conn, self.mirror, change)
        metrics.record_applied(self.mirror.stream, change.revision, {self.mirror.table: rows})
