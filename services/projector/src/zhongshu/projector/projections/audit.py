"""AUDIT (``audit.<tenant>.<kind>``) → ``audit``, the security trail: one row per event, keyed by
its stream sequence, so a replay inserts nothing twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import asyncpg
import msgspec

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.projector.projections import Applied, Projection, written
from zhongshu.projector.records import Record, decode_known

INSERT = """
INSERT INTO audit (stream_seq, tenant, kind, actor, action, outcome, data, at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::jsonb[], $8::timestamptz[])
ON CONFLICT (stream_seq) DO NOTHING
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
        )
    ]


class AuditProjection(Projection[AuditRow]):
    stream: ClassVar[str] = streams.AUDIT.name
    durable: ClassVar[str] = "projector-audit"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_AUDIT,)
    tables: ClassVar[tuple[str, ...]] = ("audit",)

    def plan(self, record: Record) -> list[AuditRow]:
        return plan(record)

    async def apply(self, conn: asyncpg.Connection, change: AuditRow, applied: Applied) -> None:
        await self.apply_all(conn, [change], applied)

    async def apply_all(
        self, conn: asyncpg.Connection, changes: Sequence[AuditRow], applied: Applied
    ) -> None:
        """The whole batch in one insert (rows keyed by sequence: order does not matter)."""
        if not changes:
            return
        columns = zip(
            *(
                (c.seq, c.tenant, c.kind, c.actor, c.action, c.outcome, c.data, c.at)
                for c in changes
            ),
            strict=True,
        )
        applied.rows["audit"] += written(await conn.execute(INSERT, *map(list, columns)))
