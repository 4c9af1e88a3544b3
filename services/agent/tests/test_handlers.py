"""The agent on a real JetStream, a real Redis and the fake OpenAI-compatible LLM: every command
becomes a task with its events, one final reply (streamed before it), and a clear failure when
the model cannot answer."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest_asyncio
from nats.js.client import JetStreamContext
from redis.asyncio import Redis

from zhongshu.agent import domain
from zhongshu.agent.main import build_service
from zhongshu.agent.settings import AgentSettings
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AuditRecorded,
    CommandRequested,
    DeliveryTarget,
    MessageReceived,
    ReplyGenerated,
    TaskCompleted,
    TaskFailed,
    TaskProgressed,
    TaskRequested,
    TaskStarted,
    TaskToolCalled,
    WorkflowRef,
)
from zhongshu.contracts.examples import example
from zhongshu.contracts.hotcache import task_status_key
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.testing import collect
from zhongshu.runtime.hubconfig import parse_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service

PLATFORM = "feishu"
SHOUT_SERVER = Path(__file__).with_name("mcp_shout_server.py")


class Hub:
    """One test's tenant, app and fake model, and agent replicas for them."""

    def __init__(self, js: JetStreamContext, nats_url: str, redis_url: str, llm: FakeLLM):
        self.js, self.nats_url, self.redis_url, self.llm = js, nats_url, redis_url, llm
        self.tenant = "t" + uuid.uuid4().hex[:10]
        self.app = "app-" + self.tenant
        self.chat = "oc_" + self.tenant
        self.services: list[Service] = []

    def yaml(self, *, model: str | None = None, agent: str = "", persona: str = "") -> str:
        if model is None:
            model = (
                f"model:\n  providers: [{{name: fake, endpoint: '{self.llm.url}', "
                "model: fake-model}]\n  qps: 200\n  timeout_s: 10\n"
            )
        return (
            f"apps:\n  {self.app}:\n    tenant: {self.tenant}\n    platform: feishu\n"
            f"    feishu: {{app_id: cli_x, app_secret: '${{APP_SECRET}}'}}\n"
            + (f"    persona: '{persona}'\n" if persona else "")
            + model
            + agent
        )

    async def start(self, **yaml: Any) -> Service:
        config = parse_config(self.yaml(**yaml), environ={"APP_SECRET": "app-secret-value"})
        service = build_service(config=StaticConfig(config))
        await service.start(
            AgentSettings(
                nats_url=self.nats_url,
                redis_url=self.redis_url,
                ack_wait_s=5,
                agent_stream_interval_s=0.05,
            )
        )
        self.services.append(service)
        return service

    async def stop_all(self) -> None:
        for service in self.services:
            await service.stop()
        self.services.clear()

    def command(self, name: str, text: str, *, user: str = "ou_alice") -> CommandRequested:
        base = example(MessageReceived)
        message = msgspec.structs.replace(
            base,
            app=self.app,
            tenant=self.tenant,
            chat_id=self.chat,
            sender=msgspec.structs.replace(base.sender, id=user, open_id=user),
            text=text,
        )
        return CommandRequested(command=name, text=text, message=message)

    async def send(self, command: CommandRequested, *, event_id: str | None = None) -> str:
        env = wire.make_envelope(
            command,
            id=event_id or uuid.uuid4().hex,
            source="test",
            tenant=self.tenant,
            conversation_id=f"{self.app}:{self.chat}",
        )
        await self.js.publish(
            subjects.chat_command(PLATFORM, self.tenant),
            wire.encode(env),
            headers={H.MSG_ID: uuid.uuid4().hex},  # a fresh publish id: a true redelivery
        )
        return env.id

    async def finals(self, count: int, within_s: float = 20) -> list[ReplyGenerated]:
        """Waits for ``count`` final replies in this tenant."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            found = [r for r in await self.replies() if r.final]
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.1)

    async def replies(self) -> list[ReplyGenerated]:
        msgs = await collect(self.js, subjects.chat_reply(PLATFORM, self.tenant), within_s=0.3)
        decoder = wire.decoder(ReplyGenerated)
        return [decoder.decode(m.data).data for m in msgs]

    async def task_events(self) -> list[Envelope[Any]]:
        msgs = await collect(self.js, subjects.task_events_for(self.tenant), within_s=0.5)
        return [wire.decode_any(m.data) for m in msgs]


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


@pytest_asyncio.fixture
async def hub(
    js: JetStreamContext, provisioned_nats_url: str, redis_url: str, llm: FakeLLM
) -> AsyncIterator[Hub]:
    hub = Hub(js, provisioned_nats_url, redis_url, llm)
    yield hub
    await hub.stop_all()


def types_of(events: list[Envelope[Any]]) -> list[type[Any]]:
    return [type(e.data) for e in events]


async def test_a_command_streams_its_answer_into_one_final_reply_and_completes_the_task(
    hub: Hub, redis_url: str
) -> None:
    hub.llm.chunk_delay_s = 0.08
    await hub.start()
    command_id = await hub.send(hub.command("task", "tell me about the weather in Hangzhou today"))
    finals = await hub.finals(1)
    assert [f.text for f in finals] == ["Answer: tell me about the weather in Hangzhou today"]
    replies = await hub.replies()
    chunks = [r for r in replies if not r.final]
    assert chunks, "the answer was streamed before the final reply"
    assert all(r.stream_id == finals[0].reply_id for r in replies)
    assert finals[0].chunk_index == domain.FINAL_CHUNK_INDEX
    assert finals[0].reply_handle is not None  # answered in place
    events = await hub.task_events()
    kinds = types_of(events)
    assert kinds[0] is TaskStarted
    assert kinds[-1] is TaskCompleted
    assert TaskProgressed in kinds
    streamed = "".join(e.data.chunk for e in events if isinstance(e.data, TaskProgressed))
    assert streamed == finals[0].text
    started = events[0].data
    assert started.origin == "chat"
    assert started.requested_by == "ou_alice"
    task_id = domain.plan_command(hub.command("task", "x"), command_id).task_id
    assert started.task_id == task_id
    redis = Redis.from_url(redis_url)
    status = json.loads(await redis.get(task_status_key(hub.tenant, task_id)))
    assert status["status"] == "completed"
    assert 0 < await redis.ttl(task_status_key(hub.tenant, task_id)) <= 7 * 24 * 3600
    await redis.aclose()


async def test_the_same_question_twice_is_answered_from_the_cache(hub: Hub) -> None:
    await hub.start()
    await hub.send(hub.command("task", "what is the capital of Zhejiang?"))
    await hub.finals(1)
    await hub.send(hub.command("task", "what is the capital of Zhejiang?", user="ou_bob"))
    finals = await hub.finals(2)
    assert [f.text for f in finals] == ["Answer: what is the capital of Zhejiang?"] * 2
    assert len(hub.llm.calls) == 1


async def test_a_cached_answer_still_starts_and_completes_its_task_in_order(
    hub: Hub, redis_url: str
) -> None:
    await hub.start()
    await hub.send(hub.command("task", "how far is Ningbo?"))
    await hub.finals(1)
    cached_id = await hub.send(hub.command("task", "how far is Ningbo?", user="ou_bob"))
    await hub.finals(2)
    task_id = domain.plan_command(hub.command("task", "x"), cached_id).task_id
    events = [e for e in await hub.task_events() if e.data.task_id == task_id]
    assert types_of(events) == [TaskStarted, TaskCompleted]
    assert events[0].data.requested_by == "ou_bob"
    redis = Redis.from_url(redis_url)
    status = json.loads(await redis.get(task_status_key(hub.tenant, task_id)))
    await redis.aclose()
    assert status["status"] == "completed"
    assert len(hub.llm.calls) == 1


async def test_a_redelivered_command_yields_one_final_reply(hub: Hub) -> None:
    await hub.start()
    command = hub.command("task", "run the report")
    await hub.send(command, event_id="cmd-same")
    await hub.finals(1)
    await hub.send(command, event_id="cmd-same")  # the same command, delivered again
    await asyncio.sleep(1.0)
    finals = await hub.finals(1)
    assert len(finals) == 1


async def test_rate_limited_three_times_the_answer_still_arrives(hub: Hub) -> None:
    hub.llm.fail_next(3, status=429, retry_after_s=0.2)
    await hub.start()
    await hub.send(hub.command("task", "are you busy?"))
    finals = await hub.finals(1)
    assert [f.text for f in finals] == ["Answer: are you busy?"]
    assert hub.llm.outcomes() == ["http_429"] * 3 + ["ok"]


async def test_a_model_failing_past_the_budget_gets_a_clear_reply_and_a_failed_task(
    hub: Hub,
) -> None:
    hub.llm.fail_for(60, status=500)
    model = (
        f"model:\n  providers: [{{name: fake, endpoint: '{hub.llm.url}', model: m}}]\n"
        "  timeout_s: 2\n"
    )
    await hub.start(model=model)
    await hub.send(hub.command("task", "hello?"))
    finals = await hub.finals(1)
    assert len(finals) == 1
    assert finals[0].text.startswith("Sorry")
    assert "failing" in finals[0].text
    failed = [e.data for e in await hub.task_events() if isinstance(e.data, TaskFailed)]
    assert [f.error_code for f in failed] == ["http_500"]


async def test_without_a_model_the_user_learns_which_setting_to_give(hub: Hub) -> None:
    await hub.start(model="")
    await hub.send(hub.command("chat", "hello"))
    finals = await hub.finals(1)
    assert finals[0].text == domain.NO_MODEL_TEXT
    assert "MODEL_ENDPOINT" in finals[0].text
    failed = [e.data for e in await hub.task_events() if isinstance(e.data, TaskFailed)]
    assert [f.error_code for f in failed] == ["no_model"]


async def test_a_follow_up_uses_the_previous_turn_after_an_agent_restart(hub: Hub) -> None:
    await hub.start()
    await hub.send(hub.command("chat", "my name is Ada"))
    await hub.finals(1)
    await hub.stop_all()
    await hub.start()
    await hub.send(hub.command("chat", "what is my name?"))
    await hub.finals(2)
    sent = hub.llm.calls[-1].body["messages"]
    assert [m["content"] for m in sent[1:]] == [
        "my name is Ada",
        "Answer: my name is Ada",
        "what is my name?",
    ]


async def test_reset_forgets_the_conversation(hub: Hub) -> None:
    await hub.start()
    await hub.send(hub.command("chat", "remember 42"))
    await hub.finals(1)
    await hub.send(hub.command("reset", ""))
    finals = await hub.finals(2)
    assert finals[-1].text == domain.RESET_TEXT
    await hub.send(hub.command("chat", "what did I say?"))
    await hub.finals(3)
    sent = hub.llm.calls[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]


async def test_the_persona_reaches_the_model_without_any_secret(hub: Hub) -> None:
    await hub.start(persona="You are the Acme bot (key ${APP_SECRET}).")
    await hub.send(hub.command("task", "who are you?"))
    await hub.finals(1)
    system = hub.llm.calls[-1].body["messages"][0]["content"]
    assert system.startswith("You are the Acme bot")
    assert "app-secret-value" not in system
    assert "[redacted]" in system


async def test_a_tool_call_is_recorded_and_its_result_answered(hub: Hub) -> None:
    await hub.start()
    await hub.send(hub.command("task", '[[tool:task_status {"task_id": "nope"}]]'))
    finals = await hub.finals(1)
    assert finals[0].text.startswith("Answer: no task 'nope'")
    tools = [e.data for e in await hub.task_events() if isinstance(e.data, TaskToolCalled)]
    assert [(t.tool, t.ok) for t in tools] == [("task_status", True)]
    assert tools[0].arguments == '{"task_id": "nope"}'


async def test_send_message_posts_only_to_a_configured_chat_of_the_tenant(hub: Hub) -> None:
    agent = (
        f"agent:\n  tools:\n    chats:\n      ops: {{app: {hub.app}, chat: oc_ops_{hub.tenant}}}\n"
    )
    await hub.start(agent=agent)
    await hub.send(
        hub.command("task", '[[tool:send_message {"chat": "ops", "text": "disk is full"}]]')
    )
    finals = await hub.finals(2)
    posted = [f for f in finals if f.chat_id == f"oc_ops_{hub.tenant}"]
    assert [p.text for p in posted] == ["disk is full"]
    await hub.send(hub.command("task", '[[tool:send_message {"chat": "ceo", "text": "hello"}]]'))
    finals = await hub.finals(3)
    assert "no chat named 'ceo'" in finals[-1].text
    assert len([f for f in finals if f.chat_id != hub.chat]) == 1


async def test_tools_from_a_configured_mcp_server_can_be_called(hub: Hub) -> None:
    agent = (
        "agent:\n  tools:\n    mcp:\n"
        f"      shout: {{command: '{sys.executable}', args: ['{SHOUT_SERVER}']}}\n"
    )
    await hub.start(agent=agent)
    await hub.send(hub.command("task", '[[tool:shout__shout {"text": "quiet please"}]]'))
    finals = await hub.finals(1)
    assert finals[0].text == "Answer: QUIET PLEASE"
    offered = {t["function"]["name"] for t in hub.llm.calls[0].body["tools"]}
    assert "shout__shout" in offered


async def test_a_task_request_is_answered_into_its_chats(hub: Hub) -> None:
    await hub.start()
    request = TaskRequested(
        task_id="t-" + uuid.uuid4().hex[:8],
        tenant=hub.tenant,
        requested_by="api:ops",
        origin="api",
        prompt="daily summary",
        deliver_to=(DeliveryTarget(kind="chat", app=hub.app, chat_id="oc_daily"),),
    )
    env = wire.make_envelope(request, id=request.task_id, source="test", tenant=hub.tenant)
    await hub.js.publish(
        subjects.task_requested(hub.tenant), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    finals = await hub.finals(1)
    assert [(f.chat_id, f.text) for f in finals] == [("oc_daily", "Answer: daily summary")]
    events = await hub.task_events()
    assert types_of(events)[0] is TaskStarted
    assert events[0].data.origin == "api"
    assert types_of(events)[-1] is TaskCompleted


async def test_a_workflow_task_is_left_to_the_task_engine(hub: Hub) -> None:
    await hub.start()
    request = TaskRequested(
        task_id="wf-" + uuid.uuid4().hex[:8],
        tenant=hub.tenant,
        requested_by="api:ops",
        origin="api",
        workflow=WorkflowRef(name="daily"),
    )
    env = wire.make_envelope(request, id=request.task_id, source="test", tenant=hub.tenant)
    await hub.js.publish(
        subjects.task_requested(hub.tenant), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:  # acked (handled), and nothing published for it
        info = await hub.js.consumer_info(streams.TASKS.name, "agent-tasks")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        assert loop.time() < deadline, info
        await asyncio.sleep(0.1)
    assert await hub.task_events() == []
    assert hub.llm.calls == []


async def test_fetch_url_reads_only_allow_listed_addresses(hub: Hub) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from zhongshu.devstack.fakes.local_server import LocalServer

    async def status(request: Any) -> PlainTextResponse:
        return PlainTextResponse("all systems green")

    async with LocalServer(Starlette(routes=[Route("/status", status)])) as site:
        allowed = f"{site.base_url}/status"
        agent = (
            f"agent:\n  tools:\n    fetch_allow: ['{allowed}']\n"
            "    fetch_allow_internal: ['127.0.0.1']\n"  # the site is a local fake
        )
        await hub.start(agent=agent)
        await hub.send(hub.command("task", f'[[tool:fetch_url {{"url": "{allowed}"}}]]'))
        finals = await hub.finals(1)
        assert finals[0].text == "Answer: HTTP 200\nall systems green"
        other = f"{site.base_url}/admin"
        await hub.send(hub.command("task", f'[[tool:fetch_url {{"url": "{other}"}}]]'))
        finals = await hub.finals(2)
    assert finals[-1].text == "Answer: error: that URL is not on the allow-list"
    tools = [e.data for e in await hub.task_events() if isinstance(e.data, TaskToolCalled)]
    assert [t.ok for t in tools] == [True, False]


async def test_fetch_url_refuses_internal_addresses_and_redirects_to_them_and_audits(
    hub: Hub,
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, RedirectResponse
    from starlette.routing import Route

    from zhongshu.devstack.fakes.local_server import LocalServer

    async def hop(request: Request) -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/")

    async def secret(request: Any) -> PlainTextResponse:
        return PlainTextResponse("internal only")

    routes = [Route("/hop", hop), Route("/secret", secret)]
    async with LocalServer(Starlette(routes=routes)) as site:
        # Every http URL passes the prefixes: what stops these is the address check.
        await hub.start(agent="agent:\n  tools:\n    fetch_allow: ['http://']\n")
        url = f"{site.base_url}/secret"
        await hub.send(hub.command("task", f'[[tool:fetch_url {{"url": "{url}"}}]]'))
        finals = await hub.finals(1)
        assert finals[0].text == (
            "Answer: error: refused: 127.0.0.1 is a loopback address (127.0.0.1); "
            "not allowed for outbound requests"
        )
    await hub.stop_all()  # the next replica allows the site, and must be the one to answer
    async with LocalServer(Starlette(routes=routes)) as site:
        await hub.start(
            agent="agent:\n  tools:\n    fetch_allow: ['http://']\n"
            "    fetch_allow_internal: ['127.0.0.1']\n"
        )
        url = f"{site.base_url}/hop"
        await hub.send(hub.command("task", f'[[tool:fetch_url {{"url": "{url}"}}]]'))
        finals = await hub.finals(2)
    assert finals[-1].text == (
        "Answer: error: refused: 169.254.169.254 is a link-local address (169.254.169.254); "
        "not allowed for outbound requests"
    )
    audits = await collect(hub.js, subjects.audit(hub.tenant, "security"), count=2)
    records = [wire.decode(m.data, AuditRecorded).data for m in audits]
    assert [(r.action, r.target, r.outcome, r.labels["host"]) for r in records] == [
        ("tool.refused", "fetch_url", "denied", "127.0.0.1"),
        ("tool.refused", "fetch_url", "denied", "169.254.169.254"),
    ]


async def test_a_task_cancelled_before_it_started_is_not_run(hub: Hub, redis_url: str) -> None:
    from zhongshu.contracts.hotcache import TaskStatus

    task_id = "t-" + uuid.uuid4().hex[:8]
    redis = Redis.from_url(redis_url)
    cancelled = TaskStatus(task_id=task_id, status="cancelled", updated_at=1.0)
    await redis.set(task_status_key(hub.tenant, task_id), msgspec.json.encode(cancelled))
    await redis.aclose()
    await hub.start()
    request = TaskRequested(
        task_id=task_id, tenant=hub.tenant, requested_by="api:ops", origin="api", prompt="x"
    )
    env = wire.make_envelope(request, id=task_id, source="test", tenant=hub.tenant)
    await hub.js.publish(
        subjects.task_requested(hub.tenant), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        info = await hub.js.consumer_info(streams.TASKS.name, "agent-tasks")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        assert loop.time() < deadline, info
        await asyncio.sleep(0.1)
    assert await hub.task_events() == []
    assert hub.llm.calls == []
