"""The outcome of an infer step's agent task becomes the step's: `TaskCompleted` completes the
step with the answer, `TaskFailed` fails the attempt (retried like any other failure).

The engine keeps no table of the tasks it asked for: a task's id is derived from its run and
step (`naming.child_task`), and its events are correlated to the run, so the run and step are
found again from the task's own events and the run's history."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import StepCompleted, TaskCompleted, TaskFailed
from zhongshu.runtime import Delivery
from zhongshu.runtime.outbox import Outbox
from zhongshu.taskengine import metrics, naming
from zhongshu.taskengine.engine import SOURCE, Engine
from zhongshu.taskengine.runstate import RunState
from zhongshu.taskengine.steps.worker import record_failure

log = logging.getLogger("zhongshu.taskengine.children")

OUTCOMES = frozenset({TaskCompleted.TYPE, TaskFailed.TYPE})


async def on_task_event(engine: Engine, raw: bytes, delivery: Delivery) -> None:
    try:
        if wire.peek_type(raw) not in OUTCOMES:  # progress chunks and the like: not ours
            return
        envelope = wire.decode_any(raw)
    except msgspec.DecodeError:
        return  # somebody else's malformed event; their consumers dead-letter it
    event: TaskCompleted | TaskFailed = envelope.data
    for run_id in candidate_runs(event.task_id, envelope.correlation_id):
        state = await engine.runlog.read(envelope.tenant, run_id)
        found = find_step(state, event.task_id)
        if found is not None:
            await _settle(engine, envelope, delivery, state, *found)
            return


def candidate_runs(task_id: str, correlation_id: str | None) -> list[str]:
    """Runs the task may belong to: the parent part of a readable derived id
    (``<run_id>:step.<step>``), and the run its envelope is correlated to."""
    found: list[str] = []
    parent, colon, stage = task_id.rpartition(":")
    if colon and stage.startswith("step."):
        found.append(parent)
    if correlation_id and correlation_id != task_id and correlation_id not in found:
        found.append(correlation_id)
    return found


def find_step(state: RunState, task_id: str) -> tuple[str, int] | None:
    """The step (and retry) whose agent task this is, if it belongs to this run."""
    if state.started is None:
        return None
    for step in state.started.steps:
        for retry in range(state.step(step).retries_used + 1):
            if naming.child_task(state.run_id, step, retry) == task_id:
                return step, retry
    return None


async def _settle(
    engine: Engine,
    envelope: Envelope[Any],
    delivery: Delivery,
    state: RunState,
    step: str,
    retry: int,
) -> None:
    assert state.started is not None
    progress = state.step(step)
    if state.finished or progress.done:
        return
    run_id, tenant = state.run_id, state.started.tenant
    outbox = Outbox(delivery, source=SOURCE, tenant=tenant, correlation_id=state.correlation_id)
    duration_ms = (
        int((datetime.now(UTC) - progress.started_at).total_seconds() * 1000)
        if progress.started_at is not None
        else None
    )
    event = envelope.data
    if isinstance(event, TaskCompleted):
        output: dict[str, Any] = {"text": event.result_text}
        if event.result_data is not None:
            output["data"] = event.result_data
        await outbox.publish(
            subjects.workflow_run(outbox.tenant, run_id),
            StepCompleted(
                run_id=run_id,
                step=step,
                output=output,
                duration_ms=duration_ms,
                attempt=max(1, progress.attempts),
            ),
            naming.step_completed(run_id, step),
        )
        metrics.STEP_ATTEMPTS.labels("infer", "completed").inc()
        return
    if retry != progress.retries_used:
        return  # an earlier attempt's task: that failure is already recorded
    latest = await engine.runlog.last_step_request(tenant, run_id, step)
    if latest is None:
        log.warning("run %s step %s: its request is gone; cannot retry", run_id, step)
        return
    sequence, request = latest
    async with delivery.keepalive():
        await record_failure(
            engine,
            outbox,
            request,
            sequence,
            retries_used=progress.retries_used,
            attempt=max(1, progress.attempts),
            reason=f"the agent's task failed: {event.reason}",
            duration_ms=duration_ms,
        )
