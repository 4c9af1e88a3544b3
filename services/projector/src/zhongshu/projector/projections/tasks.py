"""TASKS → ``tasks`` (one row per task, its current state) and ``task_events`` (every event, for
a task's history), and the hot task statuses.

A task's events are ordered on their subject, but the stream may still hold a terminal event
before a non-terminal one: an agent that crashed after publishing ``TaskCompleted`` and before
its ack runs the task again and publishes ``TaskStarted`` (attempt 2) after it. So besides the
``last_seq`` guard, a newer non-terminal event never replaces a terminal status; a newer
terminal one does (the last attempt's outcome wins).

A schedule's firings all carry the schedule's ``TaskRequested`` body; like the agent, the row of
a firing is named ``ids.schedule_fire_id(task_id, Nats-Schedule-Next)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

import asyncpg
import msgspec

from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    TaskCompleted,
    TaskFailed,
    TaskProgressed,
    TaskRequested,
    TaskStarted,
    TaskToolCalled,
)
from zhongshu.contracts.hotcache import TaskStatus
from zhongshu.contracts.ids import schedule_fire_id
from zhongshu.projector.hot import HotStatus
from zhongshu.projector.projections import Applied, Projection, rounds, written
from zhongshu.projector.records import Record, decode_known, shorten, to_json

TITLE_LENGTH = 80
RESULT_EXCERPT_LENGTH = 500
CANCELLED_CODE = "cancelled"
"""``TaskFailed.error_code`` of a cancelled task: its row says ``cancelled``, not ``failed``."""

Kind = Literal["requested", "started", "progressed", "completed", "failed"]


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One event's effect on its task's row (columns the event does not know stay None)."""

    kind: Kind
    tenant: str
    task_id: str
    seq: int
    at: datetime
    status: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskEventRow:
    seq: int
    tenant: str
    task_id: str
    event_id: str
    type: str
    data: str
    at: datetime


Change = TaskChange | TaskEventRow

_event_encoder = msgspec.json.Encoder(order="sorted")


def title_of(request: TaskRequested) -> str:
    """What was asked, as the agent titles it (until its ``TaskStarted`` says otherwise)."""
    if request.prompt is not None:
        return shorten(request.prompt, TITLE_LENGTH)
    if request.command is not None:
        return shorten(" ".join(("/" + request.command, *request.args)), TITLE_LENGTH)
    assert request.workflow is not None  # TaskRequested requires one of the three
    return shorten(f"workflow {request.workflow.name}", TITLE_LENGTH)


def plan(record: Record) -> list[Change]:
    env = decode_known(record)
    if env is None:
        return []
    event = env.data
    tenant = env.tenant or record.token(2)
    fields: dict[str, Any]
    match event:
        case TaskRequested():
            tenant = event.tenant
            task_id = event.task_id
            if fired := record.headers.get(H.SCHEDULE_NEXT):
                task_id = schedule_fire_id(task_id, fired)
            kind: Kind = "requested"
            status = "queued"
            fields = {
                "origin": event.origin,
                "requested_by": event.requested_by,
                "title": title_of(event),
                "prompt": event.prompt,
                "command": event.command,
                "args": to_json(list(event.args)),
                "workflow": event.workflow.name if event.workflow else None,
                "workflow_version": event.workflow.version if event.workflow else None,
                "inputs": to_json(event.inputs),
                "deliver_to": to_json(event.deliver_to),
                "schedule_id": event.schedule_id,
            }
        case TaskStarted():
            task_id, kind, status = event.task_id, "started", "running"
            fields = {
                "origin": event.origin or "",
                "requested_by": event.requested_by,
                "title": shorten(event.title, TITLE_LENGTH),
                "conversation_id": event.conversation_id,
                "attempt": event.attempt,
            }
        case TaskProgressed() | TaskToolCalled():
            task_id, kind, status, fields = event.task_id, "progressed", "running", {}
        case TaskCompleted():
            task_id, kind, status = event.task_id, "completed", "completed"
            fields = {
                "result_text": event.result_text,
                "result_data": None if event.result_data is None else to_json(event.result_data),
                "duration_ms": event.duration_ms,
            }
        case TaskFailed():
            task_id, kind = event.task_id, "failed"
            status = "cancelled" if event.error_code == CANCELLED_CODE else "failed"
            fields = {
                "reason": event.reason,
                "error_code": event.error_code or None,
                "retryable": event.retryable,
            }
        case _:
            return []
    at = env.time
    return [
        TaskChange(
            kind=kind,
            tenant=tenant,
            task_id=task_id,
            seq=record.seq,
            at=at,
            status=status,
            fields=fields,
        ),
        TaskEventRow(
            seq=record.seq,
            tenant=tenant,
            task_id=task_id,
            event_id=env.id,
            type=env.type,
            data=_event_encoder.encode(event).decode(),
            at=at,
        ),
    ]


# ------------------------------------------------------------------------------------ SQL

_TERMINAL = "t.status IN ('completed', 'failed', 'cancelled')"
_KEEP_TERMINAL = f"CASE WHEN {_TERMINAL} THEN t.status ELSE EXCLUDED.status END"
_RETURNING = """
RETURNING tenant, task_id, status, title, origin, requested_by, reason, result_text, updated_at
"""
_GUARD = "WHERE t.last_seq < EXCLUDED.last_seq"
_BOOKKEEPING = """
    updated_at = GREATEST(t.updated_at, EXCLUDED.updated_at),
    last_seq = EXCLUDED.last_seq
"""

REQUESTED = f"""
INSERT INTO tasks AS t (
    tenant, task_id, status, origin, requested_by, title, prompt, command, args, workflow,
    workflow_version, inputs, deliver_to, schedule_id, created_at, updated_at, last_seq)
VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11::jsonb, $12::jsonb, $13,
        $14, $14, $15)
ON CONFLICT (tenant, task_id) DO UPDATE SET
    origin = EXCLUDED.origin,
    requested_by = EXCLUDED.requested_by,
    title = CASE WHEN t.title = '' THEN EXCLUDED.title ELSE t.title END,
    prompt = EXCLUDED.prompt,
    command = EXCLUDED.command,
    args = EXCLUDED.args,
    workflow = EXCLUDED.workflow,
    workflow_version = EXCLUDED.workflow_version,
    inputs = EXCLUDED.inputs,
    deliver_to = EXCLUDED.deliver_to,
    schedule_id = EXCLUDED.schedule_id,
    created_at = LEAST(t.created_at, EXCLUDED.created_at),
    {_BOOKKEEPING}
{_GUARD}
{_RETURNING}
"""

STARTED = f"""
INSERT INTO tasks AS t (
    tenant, task_id, status, origin, requested_by, title, conversation_id, attempts,
    created_at, started_at, updated_at, last_seq)
VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $8, $8, $9)
ON CONFLICT (tenant, task_id) DO UPDATE SET
    status = {_KEEP_TERMINAL},
    origin = COALESCE(NULLIF(EXCLUDED.origin, ''), t.origin),
    requested_by = COALESCE(NULLIF(EXCLUDED.requested_by, ''), t.requested_by),
    title = COALESCE(NULLIF(EXCLUDED.title, ''), t.title),
    conversation_id = COALESCE(EXCLUDED.conversation_id, t.conversation_id),
    attempts = GREATEST(t.attempts, EXCLUDED.attempts),
    started_at = CASE WHEN {_TERMINAL} THEN COALESCE(t.started_at, EXCLUDED.started_at)
                      ELSE EXCLUDED.started_at END,
    {_BOOKKEEPING}
{_GUARD}
{_RETURNING}
"""

PROGRESSED = f"""
INSERT INTO tasks AS t (tenant, task_id, status, created_at, updated_at, last_seq)
VALUES ($1, $2, 'running', $3, $3, $4)
ON CONFLICT (tenant, task_id) DO UPDATE SET
    status = {_KEEP_TERMINAL},
    {_BOOKKEEPING}
{_GUARD}
{_RETURNING}
"""

_DURATION = (
    "COALESCE(EXCLUDED.duration_ms, "
    "(EXTRACT(EPOCH FROM EXCLUDED.finished_at - t.started_at) * 1000)::integer)"
)

COMPLETED = f"""
INSERT INTO tasks AS t (
    tenant, task_id, status, result_text, result_data, duration_ms, created_at, finished_at,
    updated_at, last_seq)
VALUES ($1, $2, 'completed', $3, $4::jsonb, $5, $6, $6, $6, $7)
ON CONFLICT (tenant, task_id) DO UPDATE SET
    status = 'completed',
    result_text = EXCLUDED.result_text,
    result_data = EXCLUDED.result_data,
    reason = NULL,
    error_code = NULL,
    retryable = NULL,
    duration_ms = {_DURATION},
    finished_at = EXCLUDED.finished_at,
    {_BOOKKEEPING}
{_GUARD}
{_RETURNING}
"""

FAILED = f"""
INSERT INTO tasks AS t (
    tenant, task_id, status, reason, error_code, retryable, created_at, finished_at,
    updated_at, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, $8)
ON CONFLICT (tenant, task_id) DO UPDATE SET
    status = EXCLUDED.status,
    reason = EXCLUDED.reason,
    error_code = EXCLUDED.error_code,
    retryable = EXCLUDED.retryable,
    result_text = NULL,
    result_data = NULL,
    duration_ms = {_DURATION},
    finished_at = EXCLUDED.finished_at,
    {_BOOKKEEPING}
{_GUARD}
{_RETURNING}
"""

EVENTS = """
INSERT INTO task_events (stream_seq, tenant, task_id, event_id, type, data, at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                     $7::timestamptz[])
ON CONFLICT (stream_seq) DO NOTHING
"""


def _arguments(change: TaskChange) -> tuple[str, tuple[Any, ...]]:
    f, key = change.fields, (change.tenant, change.task_id)
    match change.kind:
        case "requested":
            return REQUESTED, (
                *key, f["origin"], f["requested_by"], f["title"], f["prompt"], f["command"],
                f["args"], f["workflow"], f["workflow_version"], f["inputs"], f["deliver_to"],
                f["schedule_id"], change.at, change.seq,
            )  # fmt: skip
        case "started":
            return STARTED, (
                *key, f["origin"], f["requested_by"], f["title"], f["conversation_id"],
                f["attempt"], change.at, change.seq,
            )  # fmt: skip
        case "progressed":
            return PROGRESSED, (*key, change.at, change.seq)
        case "completed":
            return COMPLETED, (
                *key, f["result_text"], f["result_data"], f["duration_ms"], change.at, change.seq,
            )  # fmt: skip
        case "failed":
            return FAILED, (
                *key, change.status, f["reason"], f["error_code"], f["retryable"], change.at,
                change.seq,
            )  # fmt: skip


def hot_status(row: asyncpg.Record) -> HotStatus:
    """The hot tier's view of a task row (``TaskStatus``: what ``/status`` shows)."""
    status = row["status"]
    return HotStatus(
        tenant=row["tenant"],
        status=TaskStatus(
            task_id=row["task_id"],
            status=status,
            title=row["title"],
            detail=(row["reason"] or "") if status in ("failed", "cancelled") else "",
            origin=row["origin"],
            requested_by=row["requested_by"],
            updated_at=row["updated_at"].timestamp(),
            result_text=shorten(row["result_text"] or "", RESULT_EXCERPT_LENGTH),
        ),
    )


class TasksProjection(Projection[Change]):
    stream: ClassVar[str] = streams.TASKS.name
    durable: ClassVar[str] = "projector-tasks"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_TASK_REQUESTED, subjects.ALL_TASK_EVENTS)
    tables: ClassVar[tuple[str, ...]] = ("tasks", "task_events")

    def plan(self, record: Record) -> list[Change]:
        return plan(record)

    async def apply(self, conn: asyncpg.Connection, change: Change, applied: Applied) -> None:
        await self.apply_all(conn, [change], applied)

    async def apply_all(
        self, conn: asyncpg.Connection, changes: Sequence[Change], applied: Applied
    ) -> None:
        """Task rows in stream order per task, the history in one insert. A batch's task
        changes go in rounds holding each task once; a round's upserts of one kind are sent
        together (``fetchmany``: one round trip), since different tasks do not depend on each
        other's order."""
        history = [c for c in changes if isinstance(c, TaskEventRow)]
        updates = [c for c in changes if isinstance(c, TaskChange)]
        for group in rounds(updates, key=lambda c: (c.tenant, c.task_id)):
            by_query: dict[str, tuple[Kind, list[tuple[Any, ...]]]] = {}
            for change in group:
                query, args = _arguments(change)
                by_query.setdefault(query, (change.kind, []))[1].append(args)
            for query, (kind, arguments) in by_query.items():
                # Rows come back only for changes that applied (an older sequence does not).
                rows = await conn.fetchmany(query, arguments)
                applied.rows["tasks"] += len(rows)
                if kind != "progressed":  # progress changes nothing a status shows
                    applied.statuses.extend(hot_status(row) for row in rows)
        if history:
            columns = zip(
                *((h.seq, h.tenant, h.task_id, h.event_id, h.type, h.data, h.at) for h in history),
                strict=True,
            )
            applied.rows["task_events"] += written(await conn.execute(EVENTS, *map(list, columns)))
