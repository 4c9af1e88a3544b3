"""AUDIT (``audit.<tenant>.<kind>``) → ``audit``, the security trail, as a hash chain per tenant
(``zhongshu.runtime.auditchain``): one row per event, keyed by its stream sequence and its event
id, so a replay, or the same event published twice, chains nothing twice.

A batch locks its tenants' heads in ``audit_chain`` first (one statement that also creates the
head of a new tenant), then leaves out what is already stored, then appends the rest in stream
order and moves the heads: everything in the batch's transaction, so a rolled-back batch leaves
neither rows nor heads behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import asyncpg
import msgspec

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.projector.projections import Applied, Projection
from zhongshu.projector.records import Record, decode_known
from zhongshu.runtime import auditchain

LOCK_HEADS = """
INSERT INTO audit_chain AS c (tenant) SELECT unnest($1::text[])
ON CONFLICT (tenant) DO UPDATE SET tenant = c.tenant
RETURNING tenant, pos, hash
"""

STORED = """
SELECT stream_seq, event_id FROM audit
WHERE stream_seq = ANY($1::bigint[]) OR event_id = ANY($2::text[])
"""

INSERT = """
INSERT INTO audit (stream_seq, tenant, kind, actor, action, outcome, data, at, event_id, pos,
                   prev_hash, hash)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::jsonb[], $8::timestamptz[], $9::text[], $10::bigint[], $11::text[],
                     $12::text[])
"""

MOVE_HEADS = """
UPDATE audit_chain c SET pos = h.pos, hash = h.hash
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS h (tenant, pos, hash)
WHERE c.tenant = h.tenant
"""

_encoder = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    tenant: str
    kind: str
    actor: str
    action: str
    outcome: str
    data: str
    at: datetime
    event_id: str = ""


def plan(record: Record) -> list[AuditRow]:
    env = decode_known(record)
    if env is None or not isinstance(env.data, AuditRecorded):
        return []
    event = env.data
    return [
        AuditRow(
            seq=record.seq,
            tenant=event.tenant or env.tenant or record.token(1),
            kind=record.token(2),
            actor=event.actor,
            action=event.action,
            outcome=event.outcome,
            data=_encoder.encode(event).decode(),
            at=env.time,
            event_id=env.id,
        )
    ]


def fresh(changes: Sequence[AuditRow], stored: set[int], stored_ids: set[str]) -> list[AuditRow]:
    """The changes not stored yet, each sequence and event id once, in stream order."""
    out = []
    seqs, ids = set(stored), set(stored_ids)
    for change in sorted(changes, key=lambda c: c.seq):
        if change.seq in seqs or (change.event_id and change.event_id in ids):
            continue
        seqs.add(change.seq)
        if change.event_id:
            ids.add(change.event_id)
        out.append(change)
    return out


def chained(
    rows: Sequence[AuditRow], heads: dict[str, tuple[int, str]]
) -> list[auditchain.ChainRecord]:
    """``rows`` (in stream order) appended to their tenants' chains; ``heads`` is moved along."""
    out = []
    for row in rows:
        pos, prev = heads[row.tenant]
        record = auditchain.ChainRecord(
            tenant=row.tenant,
            pos=pos + 1,
            seq=row.seq,
            event_id=row.event_id,
            kind=row.kind,
            actor=row.actor,
            action=row.action,
            outcome=row.outcome,
            at=row.at,
            data=msgspec.json.decode(row.data),
        )
        [record] = auditchain.chain([record], prev)
        heads[row.tenant] = (record.pos, record.hash)
        out.append(record)
    return out


class AuditProjection(Projection[AuditRow]):
    stream: ClassVar[str] = streams.AUDIT.name
    durable: ClassVar[str] = "projector-audit"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_AUDIT,)
    tables: ClassVar[tuple[str, ...]] = ("audit", "audit_chain")

    def plan(self, record: Record) -> list[AuditRow]:
        return plan(record)

    async def apply(self, conn: asyncpg.Connection, change: AuditRow, applied: Applied) -> None:
        await self.apply_all(conn, [change], applied)

    async def apply_all(
        self, conn: asyncpg.Connection, changes: Sequence[AuditRow], applied: Applied
    ) -> None:
        """The whole batch in four statements: lock the heads, find what is stored, insert the
        rest chained, move the heads."""
        if not changes:
            return
        tenants = sorted({c.tenant for c in changes})
        heads = {r["tenant"]: (r["pos"], r["hash"]) for r in await conn.fetch(LOCK_HEADS, tenants)}
        found = await conn.fetch(
            STORED, [c.seq for c in changes], [c.event_id for c in changes if c.event_id]
        )
        rows = fresh(changes, {r["stream_seq"] for r in found}, {r["event_id"] for r in found})
        if not rows:
            return
        records = chained(rows, heads)
        columns = zip(
            *(
                (
                    r.seq,
                    r.tenant,
                    r.kind,
                    r.actor,
                    r.action,
                    r.outcome,
                    row.data,
                    r.at,
                    r.event_id or None,
                    r.pos,
                    r.prev_hash,
                    r.hash,
                )
                for r, row in zip(records, rows, strict=True)
            ),
            strict=True,
        )
        await conn.execute(INSERT, *map(list, columns))
        moved = sorted({r.tenant for r in records})
        await conn.execute(
            MOVE_HEADS, moved, [heads[t][0] for t in moved], [heads[t][1] for t in moved]
        )
        applied.rows["audit"] += len(records)
