"""One conversation, one trace: a signed Feishu webhook → ingress-feishu → router → agent (the
fake LLM) → notifier → the fake Feishu yields a single trace whose spans cover every service,
the model call and the platform send among them, and ``zhongshu trace <task id>`` prints it.
No collector runs: the spans reach the TRACES stream through the services' own exporter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest_asyncio
from nats.js.client import JetStreamContext
from typer.testing import CliRunner

from zhongshu.agent.main import build_service as build_agent
from zhongshu.agent.settings import AgentSettings
from zhongshu.cli import trace_cmd
from zhongshu.cli.main import app
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts import traces as T
from zhongshu.contracts.events import ReplyDelivered, TaskStarted
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.testing import collect, eventually, provision_all
from zhongshu.ingress_feishu.main import build_service as build_feishu_ingress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.notifier.main import build_service as build_notifier
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.router.main import build_service as build_router
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime import telemetry
from zhongshu.runtime.hubconfig import load_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service
from zhongshu.runtime.settings import ServiceSettings

ENCRYPT_KEY, TOKEN = "enc-key-for-trace-e2e", "verification-token-for-trace-e2e"
BOT = User("Trace Bot")
WAIT_S = 60.0  # a bound for a hung test on a shared machine, not a timing assertion
runner = CliRunner()


@dataclass
class Hub:
    nats_url: str
    js: JetStreamContext
    tenant: str
    feishu: FakeFeishuOpenAPI
    ingress: str = ""
    services: list[Service] = field(default_factory=list)

    async def start(self, service: Service, settings: ServiceSettings) -> Service:
        await service.start(settings)
        self.services.append(service)
        return service

    async def say_in_feishu(self, text: str) -> str:
        chat_id = "oc_" + uuid.uuid4().hex
        message_id = self.feishu.user_message(chat_id)
        async with FeishuEventSender(
            self.ingress,
            f"lark-{self.tenant}",
            encrypt_key=ENCRYPT_KEY,
            verification_token=TOKEN,
            app_id=self.feishu.app_id,
            bot=BOT,
        ) as sender:
            payload = sender.message(
                text=text, chat_type="group", mentions=[BOT], chat_id=chat_id, message_id=message_id
            )
            delivery = await sender.send(payload)
        assert delivery.acknowledged, delivery.response.text
        return message_id


def write_config(path: Path, tenant: str, llm: FakeLLM, feishu: FakeFeishuOpenAPI) -> None:
    path.write_text(
        f"""
tenants:
  {tenant}: {{name: Trace E2E}}
apps:
  lark-{tenant}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: {feishu.app_id}, app_secret: {feishu.app_secret},
             encrypt_key: {ENCRYPT_KEY}, verification_token: {TOKEN},
             bot_open_id: {BOT.open_id}}}
model:
  providers: [{{name: fake, endpoint: '{llm.url}', model: fake-model}}]
  qps: 50
  timeout_s: 10
"""
    )


@pytest_asyncio.fixture
async def hub(
    private_nats_server: NatsServer, redis_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    await provision_all(private_nats_server.url)
    client = await nats.connect(private_nats_server.url)
    tenant = "t" + uuid.uuid4().hex[:10]
    feishu = FakeFeishuOpenAPI(app_id=f"cli_{tenant}", app_secret=f"lark-secret-{tenant}")
    url = private_nats_server.url
    async with FakeLLM() as llm, feishu:
        config = tmp_path / "zhongshu.yaml"
        write_config(config, tenant, llm, feishu)
        hub = Hub(url, client.jetstream(), tenant, feishu)
        try:
            ingress = await hub.start(
                build_feishu_ingress(),
                FeishuIngressSettings(nats_url=url, health_port=0, config_path=config),
            )
            hub.ingress = f"http://127.0.0.1:{ingress.health_port}"
            hub_config = load_config(config, environ={})
            await hub.start(
                build_router(config=StaticConfig(hub_config)),
                RouterSettings(nats_url=url, redis_url=redis_url),
            )
            await hub.start(
                build_agent(config=StaticConfig(hub_config)),
                AgentSettings(nats_url=url, redis_url=redis_url, agent_stream_interval_s=0.05),
            )
            await hub.start(
                build_notifier(config=hub_config),
                NotifierSettings(
                    nats_url=url,
                    redis_url=redis_url,
                    health_port=0,
                    feishu_base_url=feishu.base_url,
                    http_timeout_s=5,
                ),
            )
            # Every conversation recorded, whatever an earlier test of this process configured.
            ratio = telemetry.sample_ratio()
            telemetry.set_sample_ratio(1.0)
            try:
                yield hub
            finally:
                telemetry.set_sample_ratio(ratio)
        finally:
            await asyncio.gather(*(s.stop() for s in hub.services), return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


async def test_one_feishu_conversation_is_one_trace_across_every_service(hub: Hub) -> None:
    await hub.say_in_feishu("how long is the Grand Canal")
    delivered = await collect(
        hub.js, subjects.delivery("delivered", "feishu", hub.tenant), count=1, within_s=WAIT_S
    )
    assert delivered, "the answer never reached Feishu"
    reply = wire.decode(delivered[0].data, ReplyDelivered).data
    started = await collect(hub.js, subjects.task_events_for(hub.tenant), count=1, within_s=5)
    [task_id] = {
        event.data.task_id
        for event in (wire.decode_any(m.data) for m in started)
        if isinstance(event.data, TaskStarted)
    }

    async def whole_trace() -> trace_cmd.Trace | None:
        await telemetry.BUS_EXPORTER.flush()
        try:
            found = await trace_cmd.find_trace(hub.nats_url, task_id)
        except trace_cmd.CliError:
            return None
        services = {span.service for span in found.spans}
        notifier_sends = [s for s in found.spans if s.service == "notifier" and s.kind == "client"]
        wanted = {"ingress-feishu", "router", "agent", "notifier"}
        return found if services >= wanted and notifier_sends else None

    found = await eventually(whole_trace, "the conversation's spans in TRACES", within_s=WAIT_S)
    spans = found.spans
    by_id = {span.span_id: span for span in spans}
    assert {span.trace_id for span in spans} == {found.trace_id}

    def under(span: T.SpanRecord, service: str) -> bool:
        """Whether an ancestor of ``span`` is a span of ``service``'s consume loop."""
        parent = by_id.get(span.parent_id or "")
        while parent is not None:
            if parent.service == service and parent.kind == "consumer":
                return True
            parent = by_id.get(parent.parent_id or "")
        return False

    [webhook] = [s for s in spans if s.kind == "server"]
    assert webhook.service == "ingress-feishu"
    assert webhook.parent_id is None  # the conversation starts at the webhook
    assert webhook.attributes["http.route"] == "/webhooks/feishu/{app}/events"
    assert webhook.attributes["http.response.status_code"] == 200
    [publish] = [s for s in spans if s.kind == "producer"]
    assert publish.parent_id == webhook.span_id
    assert publish.attributes["messaging.system"] == "nats"
    consumers = {s.service for s in spans if s.kind == "consumer"}
    assert consumers >= {"router", "agent", "notifier"}

    [llm] = [s for s in spans if s.name == "chat fake-model"]
    assert under(llm, "agent")
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.request.model"] == "fake-model"
    assert llm.attributes["gen_ai.usage.output_tokens"] > 0
    assert llm.attributes[T.TASK_ID] == task_id

    sends = [s for s in spans if s.service == "notifier" and s.kind == "client"]
    assert all(under(s, "notifier") for s in sends)
    assert any(s.attributes.get("zhongshu.outcome") == "ok" for s in sends)
    assert all(s.attributes["server.address"] == "127.0.0.1" for s in sends)
    # Every span is found by the tenant, and none carries the app's secret.
    assert all(s.attributes.get(T.TENANT) == hub.tenant for s in spans), [
        s.name for s in spans if s.attributes.get(T.TENANT) != hub.tenant
    ]
    assert hub.feishu.app_secret not in json.dumps([s.attributes for s in spans])

    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["trace", task_id],
        env={"ZHONGSHU_NATS_URL": hub.nats_url, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"trace {found.trace_id}:")
    for line in ("ingress-feishu: POST /webhooks/feishu/", "router: process router", "agent: chat"):
        assert line in result.output
    assert "notifier: process notifier-replies" in result.output
    # The delivered reply's platform message finds the same trace.
    if reply.platform_message_id:
        again = await trace_cmd.find_trace(hub.nats_url, reply.platform_message_id)
        assert again.trace_id == found.trace_id
