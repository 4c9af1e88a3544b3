"""An event from another team's device through the task engine, the agent and the notifier: a
matching trigger creates a task, the agent answers it with the (fake) model, and the answer
reaches a Feishu chat and a signed callback, once each; an event that does not match creates
nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.agent.main import build_service as build_agent
from zhongshu.agent.settings import AgentSettings
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.definitions import (
    TASK_CALLBACKS_ID,
    TaskTemplate,
    TriggerDefinition,
    definition_key,
    subscription_secret,
)
from zhongshu.contracts.events import DeliveryTarget, TaskCompleted, TaskRequested
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.callback_receiver import FakeCallbackReceiver
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.testing import collect, eventually, provision_all
from zhongshu.notifier.main import build_service as build_notifier
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime.hubconfig import HubConfig, parse_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service
from zhongshu.taskengine.main import build_service as build_engine
from zhongshu.taskengine.settings import TaskEngineSettings

CALLBACK_KEY = "e2e-callback-key"
WAIT_S = 60.0


class Loop:
    def __init__(self, js: JetStreamContext, tenant: str, feishu: FakeFeishuOpenAPI) -> None:
        self.js, self.tenant, self.feishu = js, tenant, feishu
        self.team = "iot" + uuid.uuid4().hex[:6]  # events.<team>.> of this test alone

    async def add_trigger(self, receiver: FakeCallbackReceiver) -> None:
        trigger = TriggerDefinition(
            id="too-hot",
            tenant=self.tenant,
            subject=f"events.{self.team}.*",
            condition="data.temperature > `30`",
            task=TaskTemplate(
                prompt="Device {{event.source}} reports {{event.data.temperature}} degrees",
                deliver_to=(
                    DeliveryTarget(kind="chat", app=f"lark-{self.tenant}", chat_id="oc_ops"),
                    DeliveryTarget(kind="callback", url=receiver.url("ops-hook")),
                ),
            ),
        )
        bucket = await self.js.key_value(streams.TRIGGERS_KV.bucket)
        await bucket.put(definition_key(self.tenant, trigger.id), msgspec.json.encode(trigger))

    async def device_reports(self, device: str, temperature: float) -> None:
        """A device publishes a CloudEvents JSON event, as another team's SDK would."""
        event = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": device,
            "type": "com.example.iot.reading",
            "time": "2026-11-25T08:00:00Z",
            "data": {"temperature": temperature},
        }
        await self.js.publish(
            subjects.events(self.team, device),
            json.dumps(event).encode(),
            headers={H.MSG_ID: event["id"]},
        )

    async def tasks(self) -> list[TaskRequested]:
        found = await collect(self.js, subjects.task_requested(self.tenant), within_s=1)
        return [wire.decode(m.data, TaskRequested).data for m in found]


def hub_config(tenant: str, llm: FakeLLM, feishu: FakeFeishuOpenAPI) -> HubConfig:
    return parse_config(
        f"""
tenants:
  {tenant}: {{name: E2E}}
apps:
  lark-{tenant}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: {feishu.app_id}, app_secret: {feishu.app_secret}}}
model:
  providers: [{{name: fake, endpoint: '{llm.url}', model: fake-model}}]
  qps: 50
  timeout_s: 10
callbacks:
  allow_internal: [127.0.0.1]   # the receiver is a local fake
""",
        environ={},
    )


@pytest_asyncio.fixture
async def loop_(
    private_nats_server: NatsServer, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Loop, FakeCallbackReceiver]]:
    # A JetStream of this test alone: the session's streams hold what other tests left.
    provisioned_nats_url = private_nats_server.url
    await provision_all(provisioned_nats_url)
    client = await nats.connect(provisioned_nats_url)
    js = client.jetstream()
    tenant = "t" + uuid.uuid4().hex[:10]
    secret = subscription_secret(CALLBACK_KEY.encode(), tenant, TASK_CALLBACKS_ID)
    llm = FakeLLM()
    feishu = FakeFeishuOpenAPI(app_id=f"cli_{tenant}", app_secret=f"s-{tenant}")
    receiver = FakeCallbackReceiver({TASK_CALLBACKS_ID: secret})
    services: list[Service] = []
    async with llm, feishu, receiver:
        config = hub_config(tenant, llm, feishu)
        url = provisioned_nats_url
        try:
            for service, settings in (
                (
                    build_engine(config=StaticConfig(config)),
                    TaskEngineSettings(nats_url=url, callback_key=CALLBACK_KEY),
                ),
                (
                    build_agent(config=StaticConfig(config)),
                    AgentSettings(nats_url=url, redis_url=redis_url, ack_wait_s=5),
                ),
                (
                    build_notifier(config=config),
                    NotifierSettings(
                        nats_url=url,
                        redis_url=redis_url,
                        feishu_base_url=feishu.base_url,
                        callback_key=CALLBACK_KEY,
                    ),
                ),
            ):
                await service.start(settings)
                services.append(service)
            yield Loop(js, tenant, feishu), receiver
        finally:
            await asyncio.gather(*(s.stop() for s in services), return_exceptions=True)
            await client.close()


async def test_a_matching_device_event_reaches_the_chat_and_a_signed_callback_once(
    loop_: tuple[Loop, FakeCallbackReceiver],
) -> None:
    loop, receiver = loop_
    await loop.add_trigger(receiver)
    await asyncio.sleep(0.5)  # the engine watches the bucket: let it see the new trigger
    await loop.device_reports("dev-7", 35)
    await loop.device_reports("dev-8", 20)  # below the condition: nothing happens

    answer = "Answer: Device dev-7 reports 35 degrees"
    await eventually(lambda: loop.feishu.deliveries, "the chat message", WAIT_S)
    await eventually(
        lambda: any(
            json.loads(r.body)["type"] == TaskCompleted.TYPE for r in receiver.accepted("ops-hook")
        ),
        "the signed TaskCompleted callback",
        WAIT_S,
    )
    await asyncio.sleep(1.0)  # anything duplicated would arrive by now

    tasks = await loop.tasks()
    assert [(t.origin, t.prompt) for t in tasks] == [("event", "Device dev-7 reports 35 degrees")]
    assert [(d.chat_id, d.content) for d in loop.feishu.deliveries] == [
        ("oc_ops", {"text": answer})
    ]
    completed = [
        r for r in receiver.accepted("ops-hook") if json.loads(r.body)["type"] == TaskCompleted.TYPE
    ]
    assert len(completed) == 1
    assert completed[0].verified
    assert receiver.verify(completed[0])
    assert json.loads(completed[0].body)["data"]["result_text"] == answer
    assert all(r.verified for r in receiver.received)
