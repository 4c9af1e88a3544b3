"""The coordinator: after each event that can move a run on (it started, a step completed, a
step failed for good), it rebuilds the run from its history and does what `plan.decide` says.

Two branches completing at once may both reach a join: both request it, and the request is
published once (`RunLog.request_step` only publishes onto an empty step subject). The task's
outcome is stored before the run's, so a run that says it is over has told its task too."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    TaskCompleted,
    TaskFailed,
)
from zhongshu.runtime import Delivery
from zhongshu.runtime.outbox import Outbox
from zhongshu.taskengine import metrics, naming, plan
from zhongshu.taskengine.adapters.definitions import DefinitionMissing
from zhongshu.taskengine.engine import SOURCE, Engine
from zhongshu.taskengine.runstate import RunState

log = logging.getLogger("zhongshu.taskengine.coordinator")


async def on_run_event(engine: Engine, envelope: Envelope[Any], delivery: Delivery) -> None:
    event = envelope.data
    if not isinstance(event, RunStarted | StepCompleted | StepFailed):
        return
    if isinstance(event, StepFailed) and not event.final:
        return  # the step worker retries it
    state = await engine.runlog.read(envelope.tenant, event.run_id)
    if state.started is None or state.finished:
        return
    run = state.started
    outbox = Outbox(delivery, source=SOURCE, tenant=run.tenant, correlation_id=state.correlation_id)
    try:
        loaded = await engine.definitions.load(run.tenant, run.workflow, run.version or None)
    except DefinitionMissing as exc:
        await fail_run(outbox, state, f"its definition is gone: {exc}")
        return
    decision = plan.decide(loaded.definition, state)
    if isinstance(decision, plan.RequestSteps):
        for request in decision.steps:
            await engine.runlog.request_step(
                wire.make_envelope(
                    request,
                    id=naming.step_requested(run.run_id, request.step),
                    source=SOURCE,
                    tenant=run.tenant,
                    correlation_id=state.correlation_id,
                ),
                after_sequence=0,
            )
    elif isinstance(decision, plan.CompleteRun):
        await complete_run(outbox, state, decision)
    else:
        await fail_run(outbox, state, decision.reason, decision.step)


async def complete_run(outbox: Outbox, state: RunState, decision: plan.CompleteRun) -> None:
    run_id = state.run_id
    duration_ms = _duration_ms(state)
    await outbox.publish_now(
        subjects.task_event(outbox.tenant, run_id),
        TaskCompleted(
            task_id=run_id,
            result_text=decision.result_text,
            result_data=decision.outputs,
            duration_ms=duration_ms,
        ),
        naming.task_completed(run_id),
    )
    await outbox.publish(
        subjects.workflow_run(outbox.tenant, run_id),
        RunCompleted(run_id=run_id, outputs=decision.outputs, duration_ms=duration_ms),
        naming.run_completed(run_id),
    )
    metrics.RUNS_ENDED.labels("completed").inc()
    log.info("run %s completed in %s ms", run_id, duration_ms)


async def fail_run(outbox: Outbox, state: RunState, reason: str, step: str | None = None) -> None:
    run_id = state.run_id
    await outbox.publish_now(
        subjects.task_event(outbox.tenant, run_id),
        TaskFailed(task_id=run_id, reason=reason, error_code="workflow_failed"),
        naming.task_failed(run_id),
    )
    await outbox.publish(
        subjects.workflow_run(outbox.tenant, run_id),
        RunFailed(run_id=run_id, reason=reason, step=step),
        naming.run_failed(run_id),
    )
    metrics.RUNS_ENDED.labels("failed").inc()
    log.info("run %s failed: %s", run_id, reason)


def _duration_ms(state: RunState) -> int | None:
    if state.started_at is None:
        return None
    return int((datetime.now(UTC) - state.started_at).total_seconds() * 1000)
