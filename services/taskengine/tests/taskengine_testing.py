"""What the task engine's bus tests share: one tenant per test on the session's JetStream, its
definitions in the buckets, engines started in this process, a tiny fake agent that answers
prompt tasks, and readers for what ended up on the streams."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
from nats.js.client import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.definitions import (
    TriggerDefinition,
    WorkflowDefinition,
    definition_key,
)
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    Event,
    ReplyGenerated,
    RunCompleted,
    RunFailed,
    TaskCompleted,
    TaskFailed,
    TaskRequested,
    WorkflowRef,
)
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.devstack.fakes.local_server import LocalServer
from zhongshu.devstack.testing import collect, eventually
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig, parse_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.taskengine.adapters.trigger_table import TriggerTable
from zhongshu.taskengine.engine import Engine
from zhongshu.taskengine.main import build_service
from zhongshu.taskengine.settings import TaskEngineSettings

EngineService = Service[TaskEngineSettings, Engine]
WAIT_S = 60.0
"""A guard against hanging, not a performance bound: the machine is shared."""
CALLBACK_KEY = "test-callback-key"
CONSUMERS = (
    (streams.EVENTS.name, "taskengine-triggers"),
    (streams.TASKS.name, "taskengine-workflows"),
    (streams.WORKFLOWS.name, "taskengine-runs"),
    (streams.WORKFLOWS.name, "taskengine-steps"),
    (streams.TASKS.name, "taskengine-children"),
)


Answer = Callable[[TaskRequested], str | Exception]


class FakeAgent:
    """Answers a tenant's prompt tasks like the agent does: `TaskCompleted` (or `TaskFailed`
    when ``answer`` returns an exception) on the task's subject, in the request's correlation,
    once per stored request."""

    def __init__(self, js: JetStreamContext, tenant: str, answer: Answer | None = None) -> None:
        self.js = js
        self.tenant = tenant
        self.answer: Answer = answer or (lambda task: f"Answer: {task.prompt}")
        self.requests: list[TaskRequested] = []
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.js.subscribe(
            subjects.task_requested(self.tenant), ordered_consumer=True, cb=self._on_request
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_request(self, msg: Any) -> None:
        envelope = wire.decode(msg.data, TaskRequested)
        task = envelope.data
        if task.workflow is not None:
            return
        self.requests.append(task)
        answer = self.answer(task)
        event: Event
        if isinstance(answer, Exception):
            event = TaskFailed(task_id=task.task_id, reason=str(answer))
        else:
            event = TaskCompleted(task_id=task.task_id, result_text=answer)
        out = wire.make_envelope(
            event,
            id=derive_msg_id(task.task_id, "fake-agent.outcome"),
            source="test/fake-agent",
            tenant=task.tenant,
            correlation_id=envelope.correlation_id or envelope.id,
        )
        await self.js.publish(
            subjects.task_event(task.tenant, task.task_id),
            wire.encode(out),
            headers={H.MSG_ID: out.id},
        )


@dataclass
class Hub:
    js: JetStreamContext
    nats_url: str
    tenant: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:10])
    services: list[EngineService] = field(default_factory=list)
    agents: list[FakeAgent] = field(default_factory=list)
    allow_internal: tuple[str, ...] = ("127.0.0.1",)  # the callback receivers are local fakes

    @property
    def app(self) -> str:
        return "lark-" + self.tenant

    def config_yaml(self) -> str:
        allowed = ", ".join(self.allow_internal)
        return (
            f"apps:\n  {self.app}:\n    tenant: {self.tenant}\n    platform: feishu\n"
            "    feishu: {app_id: cli_x, app_secret: s}\n"
            f"callbacks: {{allow_internal: [{allowed}]}}\n"
        )

    def hub_config(self) -> HubConfig:
        return parse_config(self.config_yaml(), environ={})

    def settings(self, **changes: Any) -> TaskEngineSettings:
        values: dict[str, Any] = {
            "nats_url": self.nats_url,
            "ack_wait_s": 5,
            "drain_timeout_s": 5,
            "taskengine_retry_backoff_s": 0.05,
            "callback_key": CALLBACK_KEY,
            **changes,
        }
        return TaskEngineSettings(**values)

    async def start_engine(self, **changes: Any) -> EngineService:
        service = build_service(config=StaticConfig(self.hub_config()))
        await service.start(self.settings(**changes))
        self.services.append(service)
        return service

    async def start_agent(self, answer: Answer | None = None) -> FakeAgent:
        agent = FakeAgent(self.js, self.tenant, answer)
        await agent.start()
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.stop()
        for service in self.services:
            await service.stop()

    # ------------------------------------------------------------------ definitions

    async def put_workflow(self, definition: WorkflowDefinition) -> int:
        bucket = await self.js.key_value(streams.WORKFLOWS_KV.bucket)
        key = definition_key(definition.tenant, definition.id)
        return int(await bucket.put(key, msgspec.json.encode(definition)))

    async def put_trigger(
        self, trigger: TriggerDefinition, engine: EngineService | None = None
    ) -> int:
        """Store a trigger and, given a running engine, wait until it has loaded it."""
        bucket = await self.js.key_value(streams.TRIGGERS_KV.bucket)
        key = definition_key(trigger.tenant, trigger.id)
        revision = int(await bucket.put(key, msgspec.json.encode(trigger)))
        if engine is not None:
            table: TriggerTable = engine.deps.triggers
            await eventually(
                lambda: table.revision >= revision, "the engine to load the trigger", WAIT_S
            )
        return revision

    async def request_run(
        self, workflow: str, inputs: dict[str, Any] | None = None, *, version: str | None = None
    ) -> str:
        task_id = "run-" + uuid.uuid4().hex[:12]
        request = TaskRequested(
            task_id=task_id,
            tenant=self.tenant,
            requested_by="api:test",
            origin="api",
            workflow=WorkflowRef(name=workflow, version=version),
            inputs=inputs or {},
        )
        env = wire.make_envelope(request, id=task_id, source="test", tenant=self.tenant)
        await self.js.publish(
            subjects.task_requested(self.tenant), wire.encode(env), headers={H.MSG_ID: env.id}
        )
        return task_id

    # ------------------------------------------------------------------ reading the streams

    async def envelopes(self, subject: str) -> list[Envelope[Any]]:
        return [wire.decode_any(m.data) for m in await collect(self.js, subject, within_s=2)]

    async def run_events(self, run_id: str) -> list[Any]:
        envs = await self.envelopes(subjects.workflow_run(self.tenant, run_id))
        return [e.data for e in envs]

    async def task_events(self, task_id: str) -> list[Any]:
        envs = await self.envelopes(subjects.task_event(self.tenant, task_id))
        return [e.data for e in envs]

    async def replies(self) -> list[ReplyGenerated]:
        envs = await self.envelopes(subjects.chat_reply("feishu", self.tenant))
        return [e.data for e in envs]

    async def task_requests(self) -> list[Envelope[TaskRequested]]:
        msgs = await collect(self.js, subjects.task_requested(self.tenant), within_s=2)
        return [wire.decode(m.data, TaskRequested) for m in msgs]

    async def run_end(self, run_id: str) -> RunCompleted | RunFailed:
        """Wait until the run completed or failed."""

        async def ended() -> RunCompleted | RunFailed | None:
            for event in await self.run_events(run_id):
                if isinstance(event, RunCompleted | RunFailed):
                    return event
            return None

        result: RunCompleted | RunFailed = await eventually(ended, f"run {run_id} to end", WAIT_S)
        return result

    async def settle(self) -> None:
        """Until every engine consumer has handled (and acked) everything."""

        async def idle() -> bool:
            for stream, durable in CONSUMERS:
                try:
                    info = await self.js.consumer_info(stream, durable)
                except nats.errors.Error:
                    continue
                if info.num_pending or info.num_ack_pending:
                    return False
            return True

        await eventually(idle, "the engine to settle", WAIT_S)
        await asyncio.sleep(0.2)  # a retry's backoff ends in a publish: let it land
        await eventually(idle, "the engine to settle again", WAIT_S)


def of_type(events: list[Any], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


class DataServer(LocalServer):
    """What collect steps fetch: ``/data`` answers JSON, ``/text`` plain text, ``/flaky``
    fails its first ``flaky_failures`` requests with 500, ``/broken`` always fails, ``/held``
    waits until ``release()``, ``/stall`` never answers in time. ``hits`` counts requests."""

    def __init__(self) -> None:
        super().__init__(
            Starlette(
                routes=[
                    Route("/data", self._data),
                    Route("/text", self._text),
                    Route("/flaky", self._flaky),
                    Route("/broken", self._broken),
                    Route("/held", self._held),
                    Route("/stall", self._stall),
                ]
            )
        )
        self.hits: Counter[str] = Counter()
        self.flaky_failures = 1
        self._gate = asyncio.Event()

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def release(self) -> None:
        self._gate.set()

    async def wait_for_hit(self, path: str) -> None:
        await eventually(lambda: self.hits[path] > 0, f"a request to /{path}", WAIT_S)

    def _count(self, request: Request) -> None:
        self.hits[request.url.path.lstrip("/")] += 1

    async def _data(self, request: Request) -> Response:
        self._count(request)
        return JSONResponse({"city": "Hangzhou", "temperature": 31})

    async def _text(self, request: Request) -> Response:
        self._count(request)
        return PlainTextResponse("all systems nominal")

    async def _flaky(self, request: Request) -> Response:
        self._count(request)
        if self.hits["flaky"] <= self.flaky_failures:
            return PlainTextResponse("try again", status_code=500)
        return JSONResponse({"ok": True})

    async def _broken(self, request: Request) -> Response:
        self._count(request)
        return PlainTextResponse("down", status_code=503)

    async def _held(self, request: Request) -> Response:
        self._count(request)
        await self._gate.wait()
        return JSONResponse({"city": "Hangzhou", "temperature": 31})

    async def _stall(self, request: Request) -> Response:
        self._count(request)
        await asyncio.sleep(3600)
        return PlainTextResponse("too late")
