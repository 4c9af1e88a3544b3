"""No configured secret leaves the place it is used: a conversation through the whole hub (a
signed, encrypted Feishu webhook and a signed DingTalk callback → ingresses → router → agent
with the fake LLM → notifier → the fake platforms, a task through the gateway's API with a JWT,
and signed callbacks to a subscriber and to the task's own URL), with
every secret set to a recognisable value, and then a scan of everything the hub wrote: every log
line (ECS JSON, as the services write them), every message on every stream (KV buckets and
TRACES with every span included), every reply and callback the fakes received, every prompt
the model was sent, and every ``/metrics`` page."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import ecs_logging
import httpx
import jwt
import msgspec
import nats
import pytest_asyncio
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY, generate_latest

from zhongshu.agent.main import build_service as build_agent
from zhongshu.agent.settings import AgentSettings
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.definitions import (
    TASK_CALLBACKS_ID,
    Subscription,
    definition_key,
    subscription_secret,
)
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.callback_receiver import FakeCallbackReceiver
from zhongshu.devstack.fakes.dingtalk import DingTalkCallbackSender
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.testing import collect, eventually, provision_all
from zhongshu.gateway.main import build_service as build_gateway
from zhongshu.gateway.settings import GatewaySettings
from zhongshu.ingress_dingtalk.main import build_service as build_dingtalk_ingress
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
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

BOT = User("Scan Bot")
ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "services/projector/src/zhongshu/projector/migrations"
WAIT_S = 60.0  # a bound for a hung test on a shared machine, not a timing assertion


def secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


@dataclass
class Secrets:
    """Every secret the services of the conversation hold, each recognisable."""

    feishu_app_secret: str = field(default_factory=lambda: secret("feishu-app-secret"))
    feishu_encrypt_key: str = field(default_factory=lambda: secret("feishu-encrypt-key"))
    feishu_verification_token: str = field(default_factory=lambda: secret("feishu-vtoken"))
    dingtalk_app_secret: str = field(default_factory=lambda: secret("dingtalk-app-secret"))
    model_api_key: str = field(default_factory=lambda: secret("model-api-key"))
    callback_key: str = field(default_factory=lambda: secret("callback-key"))
    jwt_secret: str = field(default_factory=lambda: secret("jwt-secret"))

    def values(self) -> dict[str, str]:
        return dict(vars(self))

    def found_in(self, text: str) -> list[str]:
        """The secrets ``text`` holds, whole or any 12 characters of their random part (a
        truncated or partly masked secret is still a leak)."""
        found = []
        for name, value in self.values().items():
            random = value.rsplit("-", 1)[1]
            pieces = [value] + [random[i : i + 12] for i in range(len(random) - 11)]
            if any(piece in text for piece in pieces):
                found.append(name)
        return found


@dataclass
class Hub:
    nats_url: str
    js: JetStreamContext
    tenant: str
    secrets: Secrets
    llm: FakeLLM
    feishu: FakeFeishuOpenAPI
    dingtalk: FakeDingTalkOpenAPI
    receiver: FakeCallbackReceiver
    logs: io.StringIO
    feishu_ingress: str = ""
    dingtalk_ingress: str = ""
    gateway: str = ""
    services: list[Service] = field(default_factory=list)

    async def start(self, service: Service, settings: ServiceSettings) -> Service:
        await service.start(settings)
        self.services.append(service)
        return service

    async def say_in_feishu(self, text: str) -> None:
        chat_id = "oc_" + uuid.uuid4().hex
        message_id = self.feishu.user_message(chat_id)
        async with FeishuEventSender(
            self.feishu_ingress,
            f"lark-{self.tenant}",
            encrypt_key=self.secrets.feishu_encrypt_key,
            verification_token=self.secrets.feishu_verification_token,
            app_id=self.feishu.app_id,
            bot=BOT,
        ) as sender:
            payload = sender.message(
                text=text, chat_type="group", mentions=[BOT], chat_id=chat_id, message_id=message_id
            )
            delivery = await sender.send(payload)
        assert delivery.acknowledged, delivery.response.text

    async def forge(self) -> None:
        """Requests signed with the wrong secrets: refused, logged and audited (where a
        careless log line would print the signature it expected)."""
        async with FeishuEventSender(
            self.feishu_ingress,
            f"lark-{self.tenant}",
            encrypt_key="not-" + self.secrets.feishu_encrypt_key[::-1],
            verification_token="not-the-token",
            app_id=self.feishu.app_id,
            bot=BOT,
        ) as sender:
            payload = sender.message(text="hello", chat_type="group", mentions=[BOT])
            delivery = await sender.send(payload)
        assert not delivery.acknowledged
        app = f"ding-{self.tenant}"
        async with DingTalkCallbackSender(self.dingtalk_ingress, app, "not-the-secret") as s:
            payload = s.message(text="hello", conversation_type="2", at_bot=True)
            response = await s.post(payload)
        assert response.status_code in (401, 403), response.text

    def token(self, secret: str) -> str:
        now = int(time.time())
        claims = {"sub": "erp", "tenant": self.tenant, "scope": "tasks:write tasks:read"}
        return jwt.encode({**claims, "iat": now, "exp": now + 600}, secret, algorithm="HS256")

    async def ask_the_api(self, prompt: str) -> str:
        """A task through the gateway with a JWT, its events to be posted to its own URL; and
        one request with a token signed by someone else (refused, audited)."""
        body = {
            "prompt": prompt,
            "deliver_to": [{"kind": "callback", "url": self.receiver.url("task")}],
        }
        async with httpx.AsyncClient(base_url=self.gateway, timeout=30) as http:
            forged = {
                "Authorization": f"Bearer {self.token('not-the-jwt-secret-but-one-just-as-long')}"
            }
            refused = await http.post("/api/v1/tasks", json=body, headers=forged)
            assert refused.status_code == 401, refused.text
            auth = {"Authorization": f"Bearer {self.token(self.secrets.jwt_secret)}"}
            answer = await http.post("/api/v1/tasks", json=body, headers=auth)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["task_id"])

    async def say_in_dingtalk(self, text: str) -> None:
        """With a sessionWebhook about to expire, so the answer goes through the OpenAPI with
        an access token fetched with the app secret."""
        conversation = "cid" + uuid.uuid4().hex
        url, expires = self.dingtalk.session_webhook(conversation, expires_in_s=5)
        app = f"ding-{self.tenant}"
        async with DingTalkCallbackSender(
            self.dingtalk_ingress, app, self.dingtalk.app_secret
        ) as s:
            payload = s.message(
                text=text,
                conversation_type="2",
                conversation_id=conversation,
                at_bot=True,
                robot_code=self.dingtalk.robot_code,
            )
            payload["sessionWebhook"] = url
            payload["sessionWebhookExpiredTime"] = int(expires.timestamp() * 1000)
            response = await s.post(payload)
        assert response.status_code == 200, response.text


def write_config(path: Path, hub_tenant: str, s: Secrets, llm: FakeLLM, feishu: str) -> None:
    path.write_text(
        f"""
tenants:
  {hub_tenant}: {{name: Secrets scan}}
apps:
  lark-{hub_tenant}:
    tenant: {hub_tenant}
    platform: feishu
    feishu: {{app_id: {feishu}, app_secret: {s.feishu_app_secret},
             encrypt_key: {s.feishu_encrypt_key}, verification_token: {s.feishu_verification_token},
             bot_open_id: {BOT.open_id}}}
  ding-{hub_tenant}:
    tenant: {hub_tenant}
    platform: dingtalk
    dingtalk: {{app_key: ding-{hub_tenant}, app_secret: {s.dingtalk_app_secret},
               robot_code: ding-robot-{hub_tenant}}}
model:
  providers: [{{name: fake, endpoint: '{llm.url}', model: fake-model,
               api_key: {s.model_api_key}}}]
  qps: 50
  timeout_s: 10
callbacks:
  allow_internal: [127.0.0.1]   # the subscriber is a local fake
"""
    )


@contextlib.contextmanager
def ecs_log_capture() -> Iterator[io.StringIO]:
    """Every record as the services write it (``telemetry.setup_logging``'s ECS JSON), at the
    levels they run at: INFO, httpx and httpcore at WARNING; ours at DEBUG, to be thorough."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ecs_logging.StdlibFormatter(exclude_fields=("color_message",)))
    root = logging.getLogger()
    ours = logging.getLogger("zhongshu")
    saved = (root.level, ours.level)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ours.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])


@pytest_asyncio.fixture
async def warm_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of this test's own with the warm tier's schema (the gateway reads it)."""
    name = "scan_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        for path in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            await conn.execute(path.read_text())
    finally:
        await conn.close()
    yield url


@pytest_asyncio.fixture
async def hub(
    private_nats_server: NatsServer, redis_url: str, warm_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    url = private_nats_server.url
    await provision_all(url)
    client = await nats.connect(url)
    tenant = "t" + uuid.uuid4().hex[:10]
    s = Secrets()
    feishu = FakeFeishuOpenAPI(app_id=f"cli_{tenant}", app_secret=s.feishu_app_secret)
    dingtalk = FakeDingTalkOpenAPI(
        app_key=f"ding-{tenant}",
        app_secret=s.dingtalk_app_secret,
        robot_code=f"ding-robot-{tenant}",
    )
    with ecs_log_capture() as logs:
        llm, receiver = FakeLLM(api_key=s.model_api_key), FakeCallbackReceiver()
        async with llm, feishu, dingtalk, receiver:
            config = tmp_path / "zhongshu.yaml"
            write_config(config, tenant, s, llm, feishu.app_id)
            hub = Hub(url, client.jetstream(), tenant, s, llm, feishu, dingtalk, receiver, logs)
            ratio = telemetry.sample_ratio()
            telemetry.set_sample_ratio(1.0)  # every span recorded, so every span is scanned
            try:
                await start_services(hub, config, redis_url, warm_url)
                yield hub
            finally:
                telemetry.set_sample_ratio(ratio)
                await asyncio.gather(*(x.stop() for x in hub.services), return_exceptions=True)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 5)


async def start_services(hub: Hub, config: Path, redis_url: str, warm_url: str) -> None:
    url = hub.nats_url
    hub_config = load_config(config, environ={})
    # A subscriber to the tenant's task events: the notifier signs each POST with a secret
    # derived from the callback key.
    sub = Subscription(id="erp", tenant=hub.tenant, url=hub.receiver.url("erp"))
    kv = await hub.js.key_value(streams.SUBSCRIPTIONS_KV.bucket)
    await kv.put(definition_key(hub.tenant, "erp"), msgspec.json.encode(sub))
    key = hub.secrets.callback_key.encode()
    hub.receiver.trust("erp", subscription_secret(key, hub.tenant, "erp"))
    ingress = await hub.start(
        build_feishu_ingress(),
        FeishuIngressSettings(nats_url=url, health_port=0, config_path=config),
    )
    hub.feishu_ingress = f"http://127.0.0.1:{ingress.health_port}"
    ingress = await hub.start(
        build_dingtalk_ingress(),
        DingTalkIngressSettings(nats_url=url, health_port=0, config=config),
    )
    hub.dingtalk_ingress = f"http://127.0.0.1:{ingress.health_port}"
    await hub.start(
        build_router(config=StaticConfig(hub_config)),
        RouterSettings(nats_url=url, redis_url=redis_url, health_port=0),
    )
    await hub.start(
        build_agent(config=StaticConfig(hub_config)),
        AgentSettings(
            nats_url=url, redis_url=redis_url, health_port=0, agent_stream_interval_s=0.05
        ),
    )
    await hub.start(
        build_notifier(config=hub_config),
        NotifierSettings(
            nats_url=url,
            redis_url=redis_url,
            health_port=0,
            feishu_base_url=hub.feishu.base_url,
            dingtalk_api_url=hub.dingtalk.base_url,
            dingtalk_oapi_url=hub.dingtalk.base_url,
            http_timeout_s=5,
            callback_key=hub.secrets.callback_key,
        ),
    )
    gateway = await hub.start(
        build_gateway(),
        GatewaySettings(
            nats_url=url,
            redis_url=redis_url,
            postgres_url=warm_url,
            health_port=0,
            callback_key=hub.secrets.callback_key,
            jwt_secret=hub.secrets.jwt_secret,
        ),
    )
    hub.gateway = f"http://127.0.0.1:{gateway.health_port}"
    hub.receiver.trust(TASK_CALLBACKS_ID, subscription_secret(key, hub.tenant, TASK_CALLBACKS_ID))


async def everything_on_the_bus(js: JetStreamContext) -> list[tuple[str, str, bytes]]:
    """(stream, subject, headers and data) of every message stored on every stream."""
    found: list[tuple[str, str, bytes]] = []
    for info in await js.streams_info():
        name, state = info.config.name or "", info.state
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await js.get_msg(name, seq)
                headers = repr(msg.headers or {}).encode()
                found.append((name, msg.subject or "", headers + b"\n" + (msg.data or b"")))
    return found


async def test_no_secret_reaches_a_log_an_event_a_reply_a_callback_a_span_or_a_metric(
    hub: Hub,
) -> None:
    await hub.say_in_feishu("what is the capital of Zhejiang")
    await hub.say_in_dingtalk("how many rivers flow into the West Lake")
    await hub.forge()
    await hub.ask_the_api("list the open incidents")
    for platform in ("feishu", "dingtalk"):
        subject = subjects.delivery("delivered", platform, hub.tenant)
        delivered = await collect(hub.js, subject, count=1, within_s=WAIT_S)
        assert delivered, f"no answer reached {platform}"
    await hub.receiver.wait_until(lambda: len(hub.receiver.accepted("erp")) >= 2)
    await hub.receiver.wait_until(lambda: len(hub.receiver.accepted("task")) >= 2)

    # Each secret was used: the webhooks were decrypted and verified, tokens were fetched with
    # the app secrets, the model was called with its key, callbacks were signed with the key.
    assert hub.feishu.deliveries
    assert hub.dingtalk.deliveries
    assert hub.llm.calls
    assert all(c.verified for c in hub.receiver.received)

    async def spans_exported() -> bool:
        await telemetry.BUS_EXPORTER.flush()
        info = await hub.js.stream_info(streams.TRACES.name)
        return info.state.messages > 0

    await eventually(spans_exported, "spans on TRACES", within_s=WAIT_S)

    # The scan finds a piece of any secret (so an empty result means something).
    for name, value in hub.secrets.values().items():
        assert hub.secrets.found_in(f"token={value.rsplit('-', 1)[1][7:19]}…") == [name]

    leaks: list[str] = []
    bus = await everything_on_the_bus(hub.js)
    for stream, subject, data in bus:
        text = data.decode("utf-8", "replace")
        leaks += [f"{name} in {stream} {subject}" for name in hub.secrets.found_in(text)]
    scanned = {stream for stream, _, _ in bus}
    assert {"TRACES", "CHAT_INBOUND", "CHAT_COMMANDS", "REPLIES", "TASKS"} <= scanned, scanned
    assert any(b"capital of Zhejiang" in data for _, _, data in bus)

    for line in hub.logs.getvalue().splitlines():
        leaks += [f"{name} in the log line {line[:300]}" for name in hub.secrets.found_in(line)]

    shown: list[Any] = [*hub.feishu.deliveries, *hub.feishu.cards.values()]
    shown += [*hub.dingtalk.deliveries]
    for item in shown:
        leaks += [
            f"{name} shown to a user: {item!r:.300}" for name in hub.secrets.found_in(repr(item))
        ]
    for posted in hub.receiver.received:
        body = posted.body.decode("utf-8", "replace")
        leaks += [f"{name} in a callback" for name in hub.secrets.found_in(body)]
    for call in hub.llm.calls:
        leaks += [f"{name} in a prompt" for name in hub.secrets.found_in(repr(call))]

    pages = [generate_latest(REGISTRY).decode()]
    async with httpx.AsyncClient(timeout=10) as http:
        for service in hub.services:
            if service.health_port:
                page = await http.get(f"http://127.0.0.1:{service.health_port}/metrics")
                assert page.status_code == 200, service.name
                pages.append(page.text)
    for page in pages:
        leaks += [f"{name} in /metrics" for name in hub.secrets.found_in(page)]

    logged = hub.logs.getvalue()
    assert "refused feishu request" in logged, "the services' logs were not captured"
    assert "refused dingtalk request" in logged
    assert leaks == []
