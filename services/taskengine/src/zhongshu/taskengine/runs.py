"""Starting a run: a `TaskRequested` that names a workflow becomes a run of the definition's
current revision (or the pinned one). The run's id is the task's id, and its steps follow from
`RunStarted` (the coordinator requests the first ones). A definition that is missing or cannot
run fails the task at once with the reason, instead of leaving it pending."""

from __future__ import annotations

from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import RunFailed, RunStarted, TaskFailed, TaskRequested, TaskStarted
from zhongshu.contracts.ids import schedule_fire_id
from zhongshu.contracts.validation import WorkflowInvalid, validate_workflow
from zhongshu.runtime import Delivery
from zhongshu.runtime.outbox import Outbox
from zhongshu.taskengine import dag, metrics, naming
from zhongshu.taskengine.adapters.definitions import DefinitionMissing, LoadedDefinition
from zhongshu.taskengine.engine import SOURCE, Engine


async def on_task_requested(
    engine: Engine, envelope: Envelope[TaskRequested], delivery: Delivery
) -> None:
    request = envelope.data
    if request.workflow is None:
        return  # a prompt or command: the agent's
    run_id = request.task_id
    fired = delivery.headers.get(H.SCHEDULE_NEXT)
    if fired:  # every firing of a schedule carries the same body (as the agent does)
        run_id = schedule_fire_id(run_id, fired)
    state = await engine.runlog.read(request.tenant, run_id)
    if state.started is not None or state.finished:
        return  # a request seen again: the run exists
    outbox = Outbox(
        delivery,
        source=SOURCE,
        tenant=request.tenant,
        correlation_id=envelope.correlation_id or envelope.id,
    )
    name = request.workflow.name
    try:
        loaded = await _definition(engine, request)
        validate_workflow(loaded.definition)
    except (DefinitionMissing, WorkflowInvalid) as exc:
        code = "workflow_not_found" if isinstance(exc, DefinitionMissing) else "workflow_invalid"
        await outbox.publish_now(
            subjects.task_event(outbox.tenant, run_id),
            TaskFailed(task_id=run_id, reason=str(exc), error_code=code),
            naming.task_failed(run_id),
        )
        await outbox.publish(
            subjects.workflow_run(outbox.tenant, run_id),
            RunFailed(run_id=run_id, reason=str(exc)),
            naming.run_failed(run_id),
        )
        metrics.RUNS_ENDED.labels("refused").inc()
        return
    # Stored before RunStarted: a run that exists has told its task it started.
    await outbox.publish_now(
        subjects.task_event(outbox.tenant, run_id),
        TaskStarted(
            task_id=run_id,
            origin=request.origin,
            requested_by=request.requested_by,
            title=f"workflow {name}",
        ),
        naming.task_started(run_id),
    )
    await outbox.publish(
        subjects.workflow_run(outbox.tenant, run_id),
        RunStarted(
            run_id=run_id,
            tenant=request.tenant,
            workflow=name,
            version=loaded.revision,
            inputs=request.inputs,
            requested_by=request.requested_by,
            steps=dag.topological_order(loaded.definition),
        ),
        naming.run_started(run_id),
    )


async def _definition(engine: Engine, request: TaskRequested) -> LoadedDefinition:
    assert request.workflow is not None
    version = request.workflow.version
    if version is not None and not version.isdigit():
        raise DefinitionMissing(f"version {version!r} is not a revision number")
    revision = int(version) if version is not None else None
    return await engine.definitions.load(request.tenant, request.workflow.name, revision)
