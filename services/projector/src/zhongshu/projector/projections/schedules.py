"""SCHEDULES' definitions (``schedule.<tenant>.<id>``, not their ``.fired`` firings) →
``schedules``: the spec from ``Nats-Schedule``, its time zone and target, and the body (the
``TaskRequested`` envelope every firing carries) as the template.

JetStream keeps one message per schedule subject, and removing a schedule purges its subject,
which no consumer sees. So besides a message without ``Nats-Schedule`` (a tombstone, if a
publisher writes one), ``reconcile`` marks deleted every row whose subject is gone from the
stream: a purge, an ``@at`` schedule that fired, or a schedule whose ``Nats-TTL`` ran out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import asyncpg
import msgspec
from nats.js.client import JetStreamContext

from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.projector.db import connection
from zhongshu.projector.projections import Applied, Projection, written
from zhongshu.projector.records import Record, to_json
from zhongshu.runtime.errors import PermanentError

log = logging.getLogger("zhongshu.projector.schedules")

DEFINED = """
INSERT INTO schedules AS s (
    tenant, schedule_id, spec, time_zone, target, template, deleted, updated_at, last_seq)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, false, $7, $8)
ON CONFLICT (tenant, schedule_id) DO UPDATE SET
    spec = EXCLUDED.spec,
    time_zone = EXCLUDED.time_zone,
    target = EXCLUDED.target,
    template = EXCLUDED.template,
    deleted = false,
    updated_at = EXCLUDED.updated_at,
    last_seq = EXCLUDED.last_seq
WHERE s.last_seq < EXCLUDED.last_seq
"""

# A tombstone keeps the last definition it replaces, marked deleted.
REMOVED = """
INSERT INTO schedules AS s (tenant, schedule_id, spec, template, deleted, updated_at, last_seq)
VALUES ($1, $2, '', '{}'::jsonb, true, $3, $4)
ON CONFLICT (tenant, schedule_id) DO UPDATE SET
    deleted = true,
    updated_at = EXCLUDED.updated_at,
    last_seq = EXCLUDED.last_seq
WHERE s.last_seq < EXCLUDED.last_seq
"""

# Rows projected from messages newer than the snapshot of subjects are left alone: their
# subject may have appeared after it was taken.
PURGED = """
UPDATE schedules SET deleted = true, updated_at = now()
WHERE NOT deleted AND last_seq <= $1 AND NOT (tenant || '.' || schedule_id = ANY($2::text[]))
"""


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    tenant: str
    schedule_id: str
    seq: int
    at: datetime
    spec: str | None
    """None: the schedule was removed."""
    time_zone: str | None = None
    target: str | None = None
    template: str = "{}"


def plan(record: Record) -> list[ScheduleChange]:
    tenant, schedule_id = record.token(1), record.token(2)
    if not tenant or not schedule_id or len(record.subject.split(".")) != 3:
        return []  # a firing, or a subject this projection does not know
    spec = record.headers.get(H.SCHEDULE)
    if not spec or not record.data:
        return [ScheduleChange(tenant, schedule_id, record.seq, record.time, None)]
    try:
        template: Any = msgspec.json.decode(record.data)
    except msgspec.DecodeError as exc:
        raise PermanentError(f"{record.subject} seq {record.seq}: body is not JSON") from exc
    return [
        ScheduleChange(
            tenant,
            schedule_id,
            record.seq,
            record.time,
            spec,
            time_zone=record.headers.get(H.SCHEDULE_TIME_ZONE),
            target=record.headers.get(H.SCHEDULE_TARGET),
            template=to_json(template),
        )
    ]


class SchedulesProjection(Projection[ScheduleChange]):
    stream: ClassVar[str] = streams.SCHEDULES.name
    durable: ClassVar[str] = "projector-schedules"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_SCHEDULES,)
    tables: ClassVar[tuple[str, ...]] = ("schedules",)

    def plan(self, record: Record) -> list[ScheduleChange]:
        return plan(record)

    async def apply(
        self, conn: asyncpg.Connection, change: ScheduleChange, applied: Applied
    ) -> None:
        key = (change.tenant, change.schedule_id)
        if change.spec is None:
            status = await conn.execute(REMOVED, *key, change.at, change.seq)
        else:
            status = await conn.execute(
                DEFINED, *key, change.spec, change.time_zone, change.target, change.template,
                change.at, change.seq,
            )  # fmt: skip
        applied.rows["schedules"] += written(status)


async def reconcile(js: JetStreamContext, pool: asyncpg.Pool) -> int:
    """Mark deleted the schedules whose subject left SCHEDULES; returns how many."""
    info = await js.stream_info(streams.SCHEDULES.name, subjects_filter=subjects.ALL_SCHEDULES)
    present = [
        ".".join(subject.split(".")[1:3])
        for subject in (info.state.subjects or {})
        if len(subject.split(".")) == 3
    ]
    async with connection(pool) as conn:
        status = await conn.execute(PURGED, info.state.last_seq, present)
    removed = written(status)
    if removed:
        log.info("%d schedule(s) no longer in %s: marked deleted", removed, streams.SCHEDULES.name)
    return removed
