"""WORKFLOWS (run events on ``workflow.run.<tenant>.<run_id>``) → ``workflow_runs`` and
``workflow_steps``: each run's status and each step's status, attempt and duration (the run
history the gateway shows). Step work (``workflow.step.…``) is the engine's, not read here.

As with tasks, a completed or failed run or step keeps its outcome when an older attempt's
``StepStarted`` is redelivered after it; a step failure that will be retried is ``retrying``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import asyncpg

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from zhongshu.projector.projections import Applied, Projection, written
from zhongshu.projector.records import Record, decode_known, to_json


@dataclass(frozen=True, slots=True)
class WorkflowChange:
    query: str
    args: tuple[Any, ...]
    table: str


_RUN_TERMINAL = "r.status IN ('completed', 'failed')"
_STEP_TERMINAL = "s.status IN ('completed', 'failed')"
_RUN_BOOKKEEPING = """
    updated_at = GREATEST(r.updated_at, EXCLUDED.updated_at),
    last_seq = EXCLUDED.last_seq
WHERE r.last_seq < EXCLUDED.last_seq
"""
_RUN_DURATION = (
    "COALESCE(EXCLUDED.duration_ms, "
    "(EXTRACT(EPOCH FROM EXCLUDED.finished_at - r.started_at) * 1000)::integer)"
)

RUN_STARTED = f"""
INSERT INTO workflow_runs AS r (
    tenant, run_id, workflow, version, status, inputs, requested_by, steps, started_at,
    updated_at, last_seq)
VALUES ($1, $2, $3, $4, 'running', $5::jsonb, $6, $7::jsonb, $8, $8, $9)
ON CONFLICT (tenant, run_id) DO UPDATE SET
    workflow = EXCLUDED.workflow,
    version = EXCLUDED.version,
    inputs = EXCLUDED.inputs,
    requested_by = EXCLUDED.requested_by,
    steps = EXCLUDED.steps,
    status = CASE WHEN {_RUN_TERMINAL} THEN r.status ELSE 'running' END,
    started_at = LEAST(r.started_at, EXCLUDED.started_at),
    {_RUN_BOOKKEEPING}
"""

RUN_COMPLETED = f"""
INSERT INTO workflow_runs AS r (
    tenant, run_id, workflow, status, outputs, duration_ms, started_at, finished_at,
    updated_at, last_seq)
VALUES ($1, $2, '', 'completed', $3::jsonb, $4, $5, $5, $5, $6)
ON CONFLICT (tenant, run_id) DO UPDATE SET
    status = 'completed',
    outputs = EXCLUDED.outputs,
    reason = NULL,
    failed_step = NULL,
    duration_ms = {_RUN_DURATION},
    finished_at = EXCLUDED.finished_at,
    {_RUN_BOOKKEEPING}
"""

RUN_FAILED = f"""
INSERT INTO workflow_runs AS r (
    tenant, run_id, workflow, status, reason, failed_step, started_at, finished_at, updated_at,
    last_seq)
VALUES ($1, $2, '', 'failed', $3, $4, $5, $5, $5, $6)
ON CONFLICT (tenant, run_id) DO UPDATE SET
    status = 'failed',
    reason = EXCLUDED.reason,
    failed_step = EXCLUDED.failed_step,
    outputs = NULL,
    duration_ms = {_RUN_DURATION},
    finished_at = EXCLUDED.finished_at,
    {_RUN_BOOKKEEPING}
"""

STEP_STARTED = f"""
INSERT INTO workflow_steps AS s (tenant, run_id, step, status, attempt, started_at, last_seq)
VALUES ($1, $2, $3, 'running', $4, $5, $6)
ON CONFLICT (tenant, run_id, step) DO UPDATE SET
    status = CASE WHEN {_STEP_TERMINAL} THEN s.status ELSE 'running' END,
    attempt = GREATEST(s.attempt, EXCLUDED.attempt),
    started_at = CASE WHEN {_STEP_TERMINAL} THEN COALESCE(s.started_at, EXCLUDED.started_at)
                      ELSE EXCLUDED.started_at END,
    last_seq = EXCLUDED.last_seq
WHERE s.last_seq < EXCLUDED.last_seq
"""

_STEP_DURATION = (
    "COALESCE(EXCLUDED.duration_ms, "
    "(EXTRACT(EPOCH FROM EXCLUDED.finished_at - s.started_at) * 1000)::integer)"
)

STEP_COMPLETED = f"""
INSERT INTO workflow_steps AS s (
    tenant, run_id, step, status, attempt, output, duration_ms, finished_at, last_seq)
VALUES ($1, $2, $3, 'completed', $4, $5::jsonb, $6, $7, $8)
ON CONFLICT (tenant, run_id, step) DO UPDATE SET
    status = 'completed',
    attempt = GREATEST(s.attempt, EXCLUDED.attempt),
    output = EXCLUDED.output,
    reason = NULL,
    duration_ms = {_STEP_DURATION},
    finished_at = EXCLUDED.finished_at,
    last_seq = EXCLUDED.last_seq
WHERE s.last_seq < EXCLUDED.last_seq
"""

# A failure that will be retried leaves the step open (`retrying`, no finished_at) and never
# overwrites a completed step; the final one closes it.
STEP_FAILED = f"""
INSERT INTO workflow_steps AS s (
    tenant, run_id, step, status, attempt, reason, duration_ms, finished_at, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tenant, run_id, step) DO UPDATE SET
    status = CASE WHEN {_STEP_TERMINAL} AND EXCLUDED.status = 'retrying' THEN s.status
                  ELSE EXCLUDED.status END,
    attempt = GREATEST(s.attempt, EXCLUDED.attempt),
    reason = CASE WHEN {_STEP_TERMINAL} AND EXCLUDED.status = 'retrying' THEN s.reason
                  ELSE EXCLUDED.reason END,
    duration_ms = CASE WHEN {_STEP_TERMINAL} AND EXCLUDED.status = 'retrying' THEN s.duration_ms
                       ELSE {_STEP_DURATION} END,
    finished_at = CASE WHEN {_STEP_TERMINAL} AND EXCLUDED.status = 'retrying' THEN s.finished_at
                       ELSE EXCLUDED.finished_at END,
    last_seq = EXCLUDED.last_seq
WHERE s.last_seq < EXCLUDED.last_seq
"""


def plan(record: Record) -> list[WorkflowChange]:
    env = decode_known(record)
    if env is None:
        return []
    event, at, seq = env.data, env.time, record.seq
    tenant = env.tenant or record.token(2)
    match event:
        case RunStarted():
            return [
                WorkflowChange(
                    RUN_STARTED,
                    (
                        event.tenant, event.run_id, event.workflow, event.version,
                        to_json(event.inputs), event.requested_by, to_json(list(event.steps)),
                        at, seq,
                    ),
                    "workflow_runs",
                )
            ]  # fmt: skip
        case RunCompleted():
            args: tuple[Any, ...] = (
                tenant,
                event.run_id,
                to_json(event.outputs),
                event.duration_ms,
                at,
                seq,
            )
            return [WorkflowChange(RUN_COMPLETED, args, "workflow_runs")]
        case RunFailed():
            args = (tenant, event.run_id, event.reason, event.step, at, seq)
            return [WorkflowChange(RUN_FAILED, args, "workflow_runs")]
        case StepStarted():
            args = (tenant, event.run_id, event.step, event.attempt, at, seq)
            return [WorkflowChange(STEP_STARTED, args, "workflow_steps")]
        case StepCompleted():
            args = (
                tenant, event.run_id, event.step, event.attempt, to_json(event.output),
                event.duration_ms, at, seq,
            )  # fmt: skip
            return [WorkflowChange(STEP_COMPLETED, args, "workflow_steps")]
        case StepFailed():
            status = "failed" if event.final else "retrying"
            args = (
                tenant, event.run_id, event.step, status, event.attempt, event.reason,
                event.duration_ms, at if event.final else None, seq,
            )  # fmt: skip
            return [WorkflowChange(STEP_FAILED, args, "workflow_steps")]
    return []


class WorkflowsProjection(Projection[WorkflowChange]):
    stream: ClassVar[str] = streams.WORKFLOWS.name
    durable: ClassVar[str] = "projector-workflows"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_WORKFLOW_RUNS,)
    tables: ClassVar[tuple[str, ...]] = ("workflow_runs", "workflow_steps")

    def plan(self, record: Record) -> list[WorkflowChange]:
        return plan(record)

    async def apply(
        self, conn: asyncpg.Connection, change: WorkflowChange, applied: Applied
    ) -> None:
        status = await conn.execute(change.query, *change.args)
        applied.rows[change.table] += written(status)
