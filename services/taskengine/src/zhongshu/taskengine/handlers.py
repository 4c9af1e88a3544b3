"""The engine's consumers and resources. Five durable consumers, one concern each:

- ``taskengine-triggers`` (EVENTS ``events.>``): events fire matching triggers (`firing`);
- ``taskengine-workflows`` (TASKS ``task.requested.>``): workflow requests start runs (`runs`);
- ``taskengine-runs`` (WORKFLOWS ``workflow.run.>``): runs move on (`coordinator`);
- ``taskengine-steps`` (WORKFLOWS ``workflow.step.>``): one step per message (`steps.worker`);
- ``taskengine-children`` (TASKS ``task.event.>``): infer steps' agent tasks report back
  (`children`)."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import httpx

from zhongshu.contracts import channels, streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import StepRequested, TaskRequested
from zhongshu.runtime import Delivery, Service
from zhongshu.runtime.liveconfig import ConfigSource, LiveConfig
from zhongshu.taskengine import children, coordinator, firing, runs
from zhongshu.taskengine.adapters.definitions import DefinitionStore
from zhongshu.taskengine.adapters.runlog import RunLog
from zhongshu.taskengine.adapters.trigger_table import TriggerTable
from zhongshu.taskengine.engine import Engine
from zhongshu.taskengine.settings import TaskEngineSettings
from zhongshu.taskengine.steps import worker

ENGINE = "engine"  # key of the Engine in service.state
STEPS = "taskengine-steps"
# Handlers here do bus round trips, not long work (a long step keeps its message alive), so a
# short ack_wait brings a crashed replica's messages back soon.
ACK_WAIT_S = 30.0
# What is retried by redelivery is infrastructure trouble (the bus, a KV read): a few minutes.
BACKOFF_S = (1.0, 5.0, 15.0, 60.0)
CONCURRENCY = 8
HTTP_TIMEOUT_S = 30.0  # per request; a step's own timeout_s bounds the whole step


def _raw(data: bytes) -> bytes:
    """Events from other teams, and every task event, are parsed by the handler, which skips
    what is not for it instead of dead-lettering it."""
    return data


def build_service(*, config: ConfigSource | None = None) -> Service:
    """The task engine; tests pass a fixed hub ``config`` (apps, for notify steps)."""
    service = Service(
        "taskengine",
        TaskEngineSettings,
        description="Event triggers and workflow runs.",
        publishes=[
            channels.TASK_REQUESTED,
            channels.TASK_EVENTS,
            channels.WORKFLOW_RUNS,
            channels.WORKFLOW_STEPS,
            channels.CHAT_REPLIES,
        ],
    )

    @service.on_startup
    async def open_resources(svc: Service) -> None:
        settings = cast(TaskEngineSettings, svc.settings)
        # Consumers are declared before settings exist; the runtime builds its loops from the
        # specs after this hook, so the step concurrency setting applies here.
        svc.specs[:] = [
            dataclasses.replace(spec, concurrency=settings.taskengine_step_concurrency)
            if spec.durable == STEPS
            else spec
            for spec in svc.specs
        ]
        http = httpx.AsyncClient(timeout=httpx.Timeout(HTTP_TIMEOUT_S), follow_redirects=True)
        source = config if config is not None else await LiveConfig.open(svc.js)
        table = TriggerTable(svc.js)
        await table.open()
        svc.state.update(http=http, config=source, triggers=table)
        svc.state[ENGINE] = Engine(
            settings=settings,
            runlog=RunLog(svc.js, svc.publisher),
            definitions=DefinitionStore(await svc.js.key_value(streams.WORKFLOWS_KV.bucket)),
            triggers=table,
            config=source,
            http=http,
        )

    @service.on_shutdown
    async def close_resources(svc: Service) -> None:
        table = svc.state.pop("triggers", None)
        if table is not None:
            await table.close()
        source = svc.state.pop("config", None)
        if source is not None and config is None:
            await source.close()
        http = svc.state.pop("http", None)
        if http is not None:
            await http.aclose()

    def engine() -> Engine:
        return cast(Engine, service.state[ENGINE])

    common: dict[str, Any] = {"ack_wait_s": ACK_WAIT_S, "backoff_s": BACKOFF_S}

    @service.consumer(
        stream=streams.EVENTS.name,
        subjects=subjects.ALL_EVENTS,
        durable="taskengine-triggers",
        decode=_raw,
        **common,
    )
    async def on_event(raw: bytes, delivery: Delivery) -> None:
        await firing.on_event(engine(), raw, delivery)

    @service.consumer(
        stream=streams.TASKS.name,
        subjects=subjects.ALL_TASK_REQUESTED,
        durable="taskengine-workflows",
        event=TaskRequested,
        concurrency=CONCURRENCY,
        **common,
    )
    async def on_task_requested(env: Envelope[TaskRequested], delivery: Delivery) -> None:
        await runs.on_task_requested(engine(), env, delivery)

    @service.consumer(
        stream=streams.WORKFLOWS.name,
        subjects=subjects.ALL_WORKFLOW_RUNS,
        durable="taskengine-runs",
        concurrency=CONCURRENCY,
        **common,
    )
    async def on_run_event(env: Envelope[Any], delivery: Delivery) -> None:
        await coordinator.on_run_event(engine(), env, delivery)

    @service.consumer(
        stream=streams.WORKFLOWS.name,
        subjects=subjects.ALL_WORKFLOW_STEPS,
        durable=STEPS,
        event=StepRequested,
        max_deliver=worker.MAX_TAKES + 3,
        **common,
    )
    async def on_step_requested(env: Envelope[StepRequested], delivery: Delivery) -> None:
        await worker.on_step_requested(engine(), env, delivery)

    @service.consumer(
        stream=streams.TASKS.name,
        subjects=subjects.ALL_TASK_EVENTS,
        durable="taskengine-children",
        decode=_raw,
        concurrency=CONCURRENCY,
        **common,
    )
    async def on_task_event(raw: bytes, delivery: Delivery) -> None:
        await children.on_task_event(engine(), raw, delivery)

    return service
