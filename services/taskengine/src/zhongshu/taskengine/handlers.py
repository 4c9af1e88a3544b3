"""The engine's consumers, one concern each; every handler hands its message to one module:

- ``taskengine-triggers`` (EVENTS ``events.>``): events fire matching triggers (`firing`);
- ``taskengine-workflows`` (TASKS ``task.requested.>``): workflow requests start runs (`runs`);
- ``taskengine-runs`` (WORKFLOWS ``workflow.run.>``): runs move on (`coordinator`);
- ``taskengine-steps`` (WORKFLOWS ``workflow.step.>``): one step per message (`steps.worker`);
- ``taskengine-children`` (TASKS ``task.event.>``): infer steps' agent tasks report back
  (`children`)."""

from __future__ import annotations

from typing import Any

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import StepRequested, TaskRequested
from zhongshu.runtime import Delivery, Service
from zhongshu.taskengine import children, coordinator, firing, runs
from zhongshu.taskengine.engine import Engine
from zhongshu.taskengine.settings import TaskEngineSettings
from zhongshu.taskengine.steps import worker

STEPS = "taskengine-steps"
# Handlers here do bus round trips, not long work (a long step keeps its message alive), so a
# short ack_wait brings a crashed replica's messages back soon.
ACK_WAIT_S = 30.0
# What is retried by redelivery is infrastructure trouble (the bus, a KV read): a few minutes.
BACKOFF_S = (1.0, 5.0, 15.0, 60.0)
CONCURRENCY = 8


def _raw(data: bytes) -> bytes:
    """Events from other teams, and every task event, are parsed by the handler, which skips
    what is not for it instead of dead-lettering it."""
    return data


def register(service: Service[TaskEngineSettings, Engine]) -> None:
    common: dict[str, Any] = {"ack_wait_s": ACK_WAIT_S, "backoff_s": BACKOFF_S}

    @service.consumes(
        stream=streams.EVENTS.name,
        subjects=subjects.ALL_EVENTS,
        durable="taskengine-triggers",
        decode=_raw,
        **common,
    )
    async def on_event(engine: Engine, raw: bytes, delivery: Delivery) -> None:
        await firing.on_event(engine, raw, delivery)

    @service.consumes(
        stream=streams.TASKS.name,
        subjects=subjects.ALL_TASK_REQUESTED,
        durable="taskengine-workflows",
        event=TaskRequested,
        concurrency=CONCURRENCY,
        **common,
    )
    async def on_task_requested(
        engine: Engine, env: Envelope[TaskRequested], delivery: Delivery
    ) -> None:
        await runs.on_task_requested(engine, env, delivery)

    @service.consumes(
        stream=streams.WORKFLOWS.name,
        subjects=subjects.ALL_WORKFLOW_RUNS,
        durable="taskengine-runs",
        concurrency=CONCURRENCY,
        **common,
    )
    async def on_run_event(engine: Engine, env: Envelope[Any], delivery: Delivery) -> None:
        await coordinator.on_run_event(engine, env, delivery)

    @service.consumes(
        stream=streams.WORKFLOWS.name,
        subjects=subjects.ALL_WORKFLOW_STEPS,
        durable=STEPS,
        event=StepRequested,
        max_deliver=worker.MAX_TAKES + 3,
        options_from=lambda settings: {"concurrency": settings.taskengine_step_concurrency},
        **common,
    )
    async def on_step_requested(
        engine: Engine, env: Envelope[StepRequested], delivery: Delivery
    ) -> None:
        await worker.on_step_requested(engine, env, delivery)

    @service.consumes(
        stream=streams.TASKS.name,
        subjects=subjects.ALL_TASK_EVENTS,
        durable="taskengine-children",
        decode=_raw,
        concurrency=CONCURRENCY,
        **common,
    )
    async def on_task_event(engine: Engine, raw: bytes, delivery: Delivery) -> None:
        await children.on_task_event(engine, raw, delivery)
