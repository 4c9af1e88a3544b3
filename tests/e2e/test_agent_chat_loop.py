"""A chat message through the whole hub and back, on the session's real JetStream and Redis: a
signed platform event → ingress → router → agent (the fake LLM, streaming) → notifier → the fake
platform. The user sees one answer: streamed into one Feishu card, or sent once to DingTalk; and
an agent killed with SIGKILL mid-answer is replaced by another replica without the reply being
lost or repeated."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.agent import domain
from zhongshu.agent.main import build_service as build_agent
from zhongshu.agent.settings import AgentSettings
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    ReplyDelivered,
    ReplyGenerated,
    TaskCompleted,
    TaskFailed,
    TaskProgressed,
    TaskStarted,
)
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.dingtalk import DingTalkCallbackSender
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI, StreamingCard
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.testing import collect, provision_all
from zhongshu.ingress_dingtalk.main import build_service as build_dingtalk_ingress
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.ingress_feishu.main import build_service as build_feishu_ingress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.notifier.main import build_service as build_notifier
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.router.main import build_service as build_router
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime.hubconfig import HubConfig, load_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service
from zhongshu.runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
ENCRYPT_KEY, TOKEN = "enc-key-for-agent-e2e", "verification-token-for-agent-e2e"
BOT = User("Acme Bot")
# Every consumer a message passes through on its way back to the user.
CONSUMERS = (
    (streams.CHAT_INBOUND.name, "router"),
    (streams.CHAT_COMMANDS.name, "agent-commands"),
    (streams.REPLIES.name, "notifier-replies"),
)
WAIT_S = 60.0  # generous: the machine is shared; a healthy run takes a few seconds


@dataclass
class Replica:
    """An agent running as its own process (``python -m zhongshu.cli run agent``)."""

    proc: asyncio.subprocess.Process
    log: Path

    @property
    def worker(self) -> str:
        """Its name in ``TaskStarted`` (``AgentSettings.agent_worker``'s default)."""
        return f"{socket.gethostname()}-{self.proc.pid}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Hub:
    """One test's tenant with a Feishu and a DingTalk app, the fakes around the hub, and its
    services: ingresses, router and notifier in this process; agents in it or in their own."""

    js: JetStreamContext
    nats_url: str
    redis_url: str
    config: Path
    tenant: str
    llm: FakeLLM
    feishu: FakeFeishuOpenAPI
    dingtalk: FakeDingTalkOpenAPI
    feishu_ingress: str = ""
    dingtalk_ingress: str = ""
    services: list[Service] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)

    @property
    def feishu_app(self) -> str:
        return "lark-" + self.tenant

    @property
    def dingtalk_app(self) -> str:
        return "ding-" + self.tenant

    async def start(self, service: Service, settings: ServiceSettings) -> Service:
        await service.start(settings)
        self.services.append(service)
        return service

    async def start_agent(self) -> None:
        """An agent replica in this process."""
        settings = AgentSettings(
            nats_url=self.nats_url,
            redis_url=self.redis_url,
            ack_wait_s=5,
            agent_stream_interval_s=0.05,
        )
        await self.start(build_agent(config=StaticConfig(self.hub_config())), settings)

    async def spawn_agent(self, *, ack_wait_s: float) -> Replica:
        """An agent replica as a process, configured like an operator would (environment and
        zhongshu.yaml); returns once it printed READY."""
        log = self.config.with_name(f"agent-{uuid.uuid4().hex[:8]}.log")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ZHONGSHU_", "MODEL_")) and k != "MAX_CONCURRENT"
        }
        env |= {
            "ZHONGSHU_NATS_URL": self.nats_url,
            "ZHONGSHU_REDIS_URL": self.redis_url,
            "ZHONGSHU_CONFIG": str(self.config),
            "ZHONGSHU_ACK_WAIT_S": str(ack_wait_s),
            "ZHONGSHU_HEALTH_PORT": "0",
            "ZHONGSHU_AGENT_STREAM_INTERVAL_S": "0.1",
            "ZHONGSHU_DRAIN_TIMEOUT_S": "5",
        }
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "zhongshu.cli",
                "run",
                "agent",
                env=env,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        replica = Replica(proc, log)
        self.replicas.append(replica)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while "READY agent" not in log.read_text(errors="replace"):
            assert proc.returncode is None, f"agent exited early:\n{replica.log_tail()}"
            assert loop.time() < deadline, f"agent not READY in {WAIT_S}s:\n{replica.log_tail()}"
            await asyncio.sleep(0.1)
        return replica

    async def stop(self) -> None:
        for replica in self.replicas:
            if replica.proc.returncode is None:
                replica.proc.kill()
                await replica.proc.wait()
        # Independent services: stopped together, each drains its own consumers.
        await asyncio.gather(*(s.stop() for s in self.services), return_exceptions=True)

    def hub_config(self) -> HubConfig:
        return load_config(self.config, environ={})

    # ------------------------------------------------------------------ the user

    async def say_in_feishu(self, text: str) -> str:
        """A user @-mentions the bot in a Feishu group; returns the message's id."""
        chat_id = "oc_" + uuid.uuid4().hex
        message_id = self.feishu.user_message(chat_id)  # so the platform can reply to it
        async with FeishuEventSender(
            self.feishu_ingress,
            self.feishu_app,
            encrypt_key=ENCRYPT_KEY,
            verification_token=TOKEN,
            app_id=self.feishu.app_id,
            bot=BOT,
        ) as sender:
            payload = sender.message(
                text=text,
                chat_type="group",
                mentions=[BOT],
                chat_id=chat_id,
                message_id=message_id,
            )
            delivery = await sender.send(payload)
        assert delivery.acknowledged, delivery.response.text
        return message_id

    async def say_in_dingtalk(self, text: str, *, webhook_valid_s: float = 90 * 60) -> str:
        """A user @-mentions the robot in a DingTalk group; returns the conversation id. The
        callback's sessionWebhook expires after ``webhook_valid_s``."""
        conversation = "cid" + uuid.uuid4().hex
        url, expires = self.dingtalk.session_webhook(conversation, expires_in_s=webhook_valid_s)
        secret = self.dingtalk.app_secret
        async with DingTalkCallbackSender(self.dingtalk_ingress, self.dingtalk_app, secret) as s:
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
        return conversation

    # ------------------------------------------------------------------ what happened

    async def delivered(self, platform: str) -> list[ReplyDelivered]:
        """Waits for the first delivery outcome on ``platform``; returns all there are."""
        subject = subjects.delivery("delivered", platform, self.tenant)
        found = await collect(self.js, subject, count=1, within_s=WAIT_S)
        assert found, f"no reply was delivered to {platform} within {WAIT_S}s"
        return [wire.decode(m.data, ReplyDelivered).data for m in await collect(self.js, subject)]

    async def settle(self) -> None:
        """Until every consumer on the way has nothing pending or unacknowledged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        for stream, durable in CONSUMERS:
            while True:
                try:
                    info = await self.js.consumer_info(stream, durable)
                except nats.js.errors.NotFoundError:
                    break  # no such consumer yet: nothing started it in this session

                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                assert loop.time() < deadline, f"{durable} did not settle: {info}"
                await asyncio.sleep(0.1)

    async def replies(self, platform: str) -> list[ReplyGenerated]:
        found = await collect(self.js, subjects.chat_reply(platform, self.tenant), within_s=2)
        return [wire.decode(m.data, ReplyGenerated).data for m in found]

    async def task_events(self) -> list[Any]:
        found = await collect(self.js, subjects.task_events_for(self.tenant), within_s=2)
        return [wire.decode_any(m.data).data for m in found]


def write_config(
    path: Path, tenant: str, llm: FakeLLM, feishu: FakeFeishuOpenAPI, extra: str = ""
) -> None:
    path.write_text(
        f"""
tenants:
  {tenant}: {{name: E2E}}
apps:
  lark-{tenant}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: {feishu.app_id}, app_secret: {feishu.app_secret},
             encrypt_key: {ENCRYPT_KEY}, verification_token: {TOKEN},
             bot_open_id: {BOT.open_id}}}
  ding-{tenant}:
    tenant: {tenant}
    platform: dingtalk
    dingtalk: {{app_key: ding-{tenant}, app_secret: ding-secret-{tenant},
               robot_code: ding-robot-{tenant}}}
model:
  providers: [{{name: fake, endpoint: '{llm.url}', model: fake-model}}]
  qps: 50
  timeout_s: 10
{extra}"""
    )


@pytest_asyncio.fixture
async def bus(private_nats_server: NatsServer) -> AsyncIterator[tuple[str, JetStreamContext]]:
    """A JetStream of this test alone: the session's streams hold what other tests left
    (replies for apps this test does not know), which its notifier would work through first."""
    await provision_all(private_nats_server.url)
    client = await nats.connect(private_nats_server.url)
    try:
        yield private_nats_server.url, client.jetstream()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


@pytest_asyncio.fixture
async def hub(
    bus: tuple[str, JetStreamContext], redis_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    provisioned_nats_url, js = bus
    tenant = "t" + uuid.uuid4().hex[:10]
    llm = FakeLLM()
    feishu = FakeFeishuOpenAPI(app_id=f"cli_{tenant}", app_secret=f"lark-secret-{tenant}")
    dingtalk = FakeDingTalkOpenAPI(
        app_key=f"ding-{tenant}",
        app_secret=f"ding-secret-{tenant}",
        robot_code=f"ding-robot-{tenant}",
    )
    async with llm, feishu, dingtalk:
        config = tmp_path / "zhongshu.yaml"
        write_config(config, tenant, llm, feishu)
        hub = Hub(js, provisioned_nats_url, redis_url, config, tenant, llm, feishu, dingtalk)
        nats_url = provisioned_nats_url
        try:
            ingress = await hub.start(
                build_feishu_ingress(),
                FeishuIngressSettings(nats_url=nats_url, health_port=0, config_path=config),
            )
            hub.feishu_ingress = f"http://127.0.0.1:{ingress.health_port}"
            ingress = await hub.start(
                build_dingtalk_ingress(),
                DingTalkIngressSettings(nats_url=nats_url, health_port=0, config=config),
            )
            hub.dingtalk_ingress = f"http://127.0.0.1:{ingress.health_port}"
            await hub.start(
                build_router(config=StaticConfig(hub.hub_config())),
                RouterSettings(nats_url=nats_url, redis_url=redis_url),
            )
            await hub.start(
                build_notifier(config=hub.hub_config()),
                NotifierSettings(
                    nats_url=nats_url,
                    redis_url=redis_url,
                    health_port=0,
                    feishu_base_url=feishu.base_url,
                    dingtalk_api_url=dingtalk.base_url,
                    dingtalk_oapi_url=dingtalk.base_url,
                    http_timeout_s=5,
                ),
            )
            yield hub
        finally:
            await hub.stop()


def the_card(feishu: FakeFeishuOpenAPI, message_id: str) -> StreamingCard:
    """The one message the user saw: a reply to theirs showing a streaming card."""
    assert len(feishu.deliveries) == 1, f"the user saw {len(feishu.deliveries)} messages"
    [shown] = feishu.deliveries
    assert (shown.kind, shown.parent_id, shown.msg_type) == ("reply", message_id, "interactive")
    assert shown.content["type"] == "card"
    card_id = shown.content["data"]["card_id"]
    # Chunks handled at the same moment may each create a card: only the one shown is used.
    assert all(not card.ops for cid, card in feishu.cards.items() if cid != card_id)
    return feishu.cards[card_id]


def assert_streamed_and_finished_once(card: StreamingCard, text: str) -> None:
    ops = [what for _, _, what in card.ops]
    sequences = [seq for _, seq, _ in card.ops]
    assert all(a < b for a, b in itertools.pairwise(sequences)), sequences
    assert ops.count("content") >= 2, f"the card was not updated while streaming: {ops}"
    assert ops.count("settings") == 1, ops  # closed once…
    assert ops[-1] == "settings", ops  # …after the last update
    assert not card.streaming
    assert list(card.elements.values()) == [text]


async def test_a_feishu_question_is_streamed_into_one_card_finished_once_with_the_answer(
    hub: Hub,
) -> None:
    """Feishu → ingress → router → agent → notifier: the answer, streamed by the model in
    several chunks, reaches the user as one reply card, updated in sequence and closed once
    with the full text, and no other message."""
    question = "what will the weather be like in Hangzhou this weekend"
    answer = f"Answer: {question}"
    hub.llm.chunk_delay_s = 0.12
    await hub.start_agent()
    message_id = await hub.say_in_feishu(question)

    [delivered] = await hub.delivered("feishu")
    await hub.settle()

    replies = await hub.replies("feishu")
    finals = [r for r in replies if r.final]
    assert [(f.text, f.chunk_index) for f in finals] == [(answer, domain.FINAL_CHUNK_INDEX)]
    assert len(replies) - len(finals) >= 2, "the agent streamed the answer in several chunks"
    assert delivered.reply_id == finals[0].reply_id
    card = the_card(hub.feishu, message_id)
    assert_streamed_and_finished_once(card, answer)
    assert hub.feishu.errors == []  # no refused sequence, no rate limit hit
    completed = [e for e in await hub.task_events() if isinstance(e, TaskCompleted)]
    assert [c.result_text for c in completed] == [answer]
    assert len(hub.llm.calls) == 1


async def test_a_dingtalk_question_is_answered_with_exactly_one_message(hub: Hub) -> None:
    """DingTalk → ingress → router → agent → notifier: the agent streams its answer, but a
    sessionWebhook cannot be edited, so the user gets the final text alone, exactly once."""
    question = "how many open incidents are there in the payments team"
    answer = f"Answer: {question}"
    hub.llm.chunk_delay_s = 0.12
    await hub.start_agent()
    conversation = await hub.say_in_dingtalk(question)

    [delivered] = await hub.delivered("dingtalk")
    await hub.settle()

    replies = await hub.replies("dingtalk")
    finals = [r for r in replies if r.final]
    assert [f.text for f in finals] == [answer]
    assert len(replies) - len(finals) >= 2, "the agent streamed the answer in several chunks"
    assert delivered.chunk_index == domain.FINAL_CHUNK_INDEX
    assert [(d.channel, d.target, d.text) for d in hub.dingtalk.deliveries] == [
        ("session", conversation, answer)
    ]
    assert hub.dingtalk.errors == []
    assert len(hub.llm.calls) == 1


async def next_event(sub: JetStreamContext.PushSubscription, kind: type[Any]) -> Any:
    """The next task event of type ``kind`` on ``sub`` (skipping others)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        remaining = deadline - loop.time()
        assert remaining > 0, f"no {kind.__name__} within {WAIT_S}s"
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            event = wire.decode_any((await sub.next_msg(timeout=remaining)).data).data
            if isinstance(event, kind):
                return event


async def test_an_agent_killed_mid_answer_is_replaced_and_the_user_gets_one_answer(
    hub: Hub,
) -> None:
    """Two agent processes; the one answering is SIGKILLed after its first streamed chunk. Once
    ack_wait lapses JetStream hands the command to the other, which answers it: one final reply
    on the bus, one TaskCompleted, one card closed once with the full answer at the user's."""
    question = "list every deployment of the billing service since Monday with its status"
    answer = f"Answer: {question}"
    hub.llm.chunk_delay_s = 0.3  # about 4 s of streaming: time to kill the replica mid-answer
    # The inference cache stays on: the killed replica held its coalescing lock, which lapses
    # within seconds (it is renewed while its holder lives), so the survivor takes over at once.
    replicas = list(await asyncio.gather(*(hub.spawn_agent(ack_wait_s=3) for _ in range(2))))
    by_worker = {r.worker: r for r in replicas}

    events = await hub.js.subscribe(subjects.task_events_for(hub.tenant), ordered_consumer=True)
    try:
        message_id = await hub.say_in_feishu(question)
        started: TaskStarted = await next_event(events, TaskStarted)
        await next_event(events, TaskProgressed)  # the answer is being streamed
    finally:
        await events.unsubscribe()
    assert started.worker in by_worker, f"{started.worker} is none of {list(by_worker)}"
    victim = by_worker.pop(started.worker)
    [survivor] = by_worker.values()
    os.kill(victim.proc.pid, signal.SIGKILL)
    assert await victim.proc.wait() == -signal.SIGKILL

    delivered = await hub.delivered("feishu")
    await hub.settle()

    replies = await hub.replies("feishu")
    finals = [r for r in replies if r.final]
    lost, duplicated = max(0, 1 - len(finals)), max(0, len(finals) - 1)
    assert (lost, duplicated) == (0, 0), [f.text for f in finals]
    assert finals[0].text == answer
    assert len(delivered) == 1
    events_seen = await hub.task_events()
    starts = [e for e in events_seen if isinstance(e, TaskStarted)]
    completed = [e for e in events_seen if isinstance(e, TaskCompleted)]
    failed = [e for e in events_seen if isinstance(e, TaskFailed)]
    assert starts[0].worker == victim.worker
    assert len(starts) == 2, [s.worker for s in starts]  # one retry, no timed-out attempt
    assert {s.worker for s in starts[1:]} == {survivor.worker}, survivor.log_tail()
    assert all(s.task_id == started.task_id for s in starts)
    assert [(c.task_id, c.result_text) for c in completed] == [(started.task_id, answer)]
    assert failed == []
    card = the_card(hub.feishu, message_id)
    assert_streamed_and_finished_once(card, answer)
    assert hub.feishu.errors == []
    assert len(hub.llm.calls) >= 2  # the killed call, and the survivor's
    assert survivor.proc.returncode is None, survivor.log_tail()


async def test_a_dingtalk_status_query_is_answered_through_the_session_webhook(hub: Hub) -> None:
    """/status goes no further than the router (answered from the hot cache), and the answer
    goes back through the callback's own sessionWebhook: one message, no model call."""
    conversation = await hub.say_in_dingtalk("/status")
    delivered = await hub.delivered("dingtalk")
    await hub.settle()
    sent = hub.dingtalk.delivered_to("session")
    assert [(d.target, d.text) for d in sent] == [(conversation, "No recent tasks.")]
    assert len(delivered) == 1
    assert hub.dingtalk.delivered_to("group") == []
    assert hub.llm.calls == []


async def test_after_the_session_webhook_expired_the_answer_goes_through_the_openapi(
    hub: Hub,
) -> None:
    """A sessionWebhook about to expire is not used: the reply goes to the group through the
    robot OpenAPI (with an access token), once."""
    conversation = await hub.say_in_dingtalk("/help", webhook_valid_s=5)
    await hub.delivered("dingtalk")
    await hub.settle()
    assert hub.dingtalk.delivered_to("session") == []
    sent = hub.dingtalk.delivered_to("group")
    assert [d.target for d in sent] == [conversation]
    assert "/status" in sent[0].text
    assert hub.dingtalk.errors == []


async def test_a_retried_feishu_help_is_answered_once_threaded_under_the_users_message(
    hub: Hub,
) -> None:
    """Feishu pushes the same event twice (it thought the first was lost): the router answers
    /help itself, and the fake Feishu sees one reply, threaded under the user's message."""
    chat_id = "oc_" + uuid.uuid4().hex
    message_id = hub.feishu.user_message(chat_id)
    async with FeishuEventSender(
        hub.feishu_ingress,
        hub.feishu_app,
        encrypt_key=ENCRYPT_KEY,
        verification_token=TOKEN,
        app_id=hub.feishu.app_id,
        bot=BOT,
    ) as sender:
        payload = sender.message(
            text="/help", chat_type="group", mentions=[BOT], chat_id=chat_id, message_id=message_id
        )
        assert (await sender.send(payload)).acknowledged
        assert (await sender.send(payload)).acknowledged
    await hub.delivered("feishu")
    await hub.settle()
    replies = [d for d in hub.feishu.deliveries if d.chat_id == chat_id]
    assert [(d.kind, d.parent_id) for d in replies] == [("reply", message_id)]
    assert "/status" in replies[0].text
    assert hub.llm.calls == []
