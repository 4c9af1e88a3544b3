"""The router on a real JetStream and a real Redis: each inbound chat event yields exactly the
outputs it should, once, and limits hold across replicas."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest_asyncio
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AlertActionRequested,
    AlertActor,
    AlertRaised,
    AuditRecorded,
    CardActionReceived,
    CommandRequested,
    Event,
    MessageReceived,
    QueryRequested,
    ReplyGenerated,
)
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY
from zhongshu.contracts.examples import example
from zhongshu.contracts.hotcache import task_index_key as index_key
from zhongshu.contracts.hotcache import task_status_key as status_key
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.devstack.testing import collect, drained
from zhongshu.router import domain
from zhongshu.router.main import build_service
from zhongshu.router.rules import AlertSource, RouterRules
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime.hubconfig import HubConfig, parse_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service

PLATFORM = "feishu"


class Hub:
    """One test's tenant and app, and a way to start router replicas for it."""

    def __init__(self, js: JetStreamContext, nats_url: str, redis_url: str) -> None:
        self.js = js
        self.nats_url = nats_url
        self.redis_url = redis_url
        self.tenant = "t" + uuid.uuid4().hex[:10]
        self.app = "app-" + self.tenant
        self.services: list[Service] = []

    def config(self, extra: str = "") -> HubConfig:
        return parse_config(self.yaml(extra), environ={})

    def yaml(self, extra: str = "") -> str:
        return (
            f"apps:\n  {self.app}:\n    tenant: {self.tenant}\n    platform: feishu\n"
            f"    feishu: {{app_id: cli_x, app_secret: s}}\n{extra}"
        )

    async def start(
        self, config: HubConfig | None = None, rules: RouterRules | None = None, live: bool = False
    ) -> Service:
        service = build_service(
            config=None if live else StaticConfig(config or self.config()), rules=rules
        )
        await service.start(
            RouterSettings(nats_url=self.nats_url, redis_url=self.redis_url, ack_wait_s=5)
        )
        self.services.append(service)
        return service

    def message(self, text: str, *, user: str = "ou_alice", **changes: Any) -> MessageReceived:
        base = example(MessageReceived)
        return msgspec.structs.replace(
            base,
            app=self.app,
            tenant=self.tenant,
            chat_kind=changes.pop("chat_kind", "p2p"),
            chat_id=changes.pop("chat_id", "oc_" + self.tenant),
            sender=msgspec.structs.replace(base.sender, id=user, open_id=user),
            text=text,
            **changes,
        )

    async def send(self, event: Event, *, event_id: str | None = None, msg_id: str = "") -> str:
        env = wire.make_envelope(
            event, id=event_id or uuid.uuid4().hex, source="test", tenant=self.tenant
        )
        await self.js.publish(
            subjects.chat_inbound(PLATFORM, self.tenant),
            wire.encode(env),
            headers={H.MSG_ID: msg_id or env.id},
        )
        return env.id

    async def settle(self, within_s: float = 15) -> None:
        """Until the router has acked everything in CHAT_INBOUND."""
        await drained(self.js, streams.CHAT_INBOUND.name, "router", within_s=within_s)

    async def outputs(self, subject: str, event_cls: type[Any]) -> list[Envelope[Any]]:
        msgs = await collect(self.js, subject, within_s=2)
        decoder = wire.decoder(event_cls)
        return [decoder.decode(m.data) for m in msgs]

    async def replies(self) -> list[ReplyGenerated]:
        envs = await self.outputs(subjects.chat_reply(PLATFORM, self.tenant), ReplyGenerated)
        return [e.data for e in envs]

    async def commands(self) -> list[CommandRequested]:
        envs = await self.outputs(subjects.chat_command(PLATFORM, self.tenant), CommandRequested)
        return [e.data for e in envs]


@pytest_asyncio.fixture
async def hub(
    js: JetStreamContext, provisioned_nats_url: str, redis_url: str
) -> AsyncIterator[Hub]:
    hub = Hub(js, provisioned_nats_url, redis_url)
    try:
        yield hub
    finally:
        for service in hub.services:
            await service.stop()


async def test_help_is_answered_once_with_a_reply_and_recorded_as_a_query(hub: Hub) -> None:
    await hub.start()
    inbound_id = await hub.send(hub.message("/help"))
    await hub.settle()
    replies = await hub.replies()
    assert len(replies) == 1
    assert replies[0].reply_id == derive_msg_id(inbound_id, domain.STAGE_REPLY)
    assert "/status [task]" in replies[0].text
    assert replies[0].reply_handle == hub.message("").reply_handle
    queries = await hub.outputs(subjects.chat_query(PLATFORM, hub.tenant), QueryRequested)
    assert [q.id for q in queries] == [derive_msg_id(inbound_id, domain.STAGE_QUERY)]
    assert await hub.commands() == []


async def test_readiness_checks_the_bus_and_redis(hub: Hub) -> None:
    service = await hub.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.health_port}") as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"bus": True, "redis": True}


async def test_free_text_becomes_one_command_for_the_agent(hub: Hub) -> None:
    await hub.start()
    message = hub.message("summarize yesterday's incidents")
    inbound_id = await hub.send(message)
    await hub.settle()
    envs = await hub.outputs(subjects.chat_command(PLATFORM, hub.tenant), CommandRequested)
    assert [e.id for e in envs] == [derive_msg_id(inbound_id, domain.STAGE_COMMAND)]
    command = envs[0].data
    assert (command.command, command.text, command.message) == (
        "chat",
        "summarize yesterday's incidents",
        message,
    )
    assert await hub.replies() == []


async def test_a_card_button_becomes_its_command(hub: Hub) -> None:
    await hub.start()
    card = msgspec.structs.replace(
        example(CardActionReceived),
        app=hub.app,
        tenant=hub.tenant,
        action={"command": "task", "args": ["approve", "42"]},
    )
    await hub.send(card)
    await hub.settle()
    commands = await hub.commands()
    assert [(c.command, c.args, c.card_action) for c in commands] == [
        ("task", ("approve", "42"), card)
    ]


async def test_status_is_answered_from_the_hot_cache(hub: Hub, redis: Redis) -> None:
    await redis.set(
        status_key(hub.tenant, "t-1"), json.dumps({"status": "running", "title": "report"})
    )
    await redis.zadd(index_key(hub.tenant), {"t-1": 1})
    await hub.start()
    await hub.send(hub.message("/status t-1"))
    await hub.send(hub.message("/status t-404"))
    await hub.send(hub.message("/tasks"))
    await hub.settle()
    texts = sorted(r.text for r in await hub.replies())
    assert texts == ["No such task: t-404", "t-1: running — report", "t-1: running — report"]


async def test_non_whitelisted_user_is_refused_with_a_reply_and_an_audit(hub: Hub) -> None:
    await hub.start(hub.config("    access: {users: [ou_bob]}\n"))
    inbound_id = await hub.send(hub.message("hello", user="ou_mallory"))
    await hub.send(hub.message("hello", user="ou_bob"))
    await hub.settle()
    replies = await hub.replies()
    assert [r.text for r in replies] == [RouterRules().refusal_text]
    assert replies[0].in_reply_to == inbound_id
    audits = await hub.outputs(subjects.audit(hub.tenant, "access"), AuditRecorded)
    assert [(a.data.actor, a.data.action, a.data.outcome) for a in audits] == [
        ("ou_mallory", "chat.denied", "denied")
    ]
    assert [c.message.sender.id for c in await hub.commands() if c.message] == ["ou_bob"]


async def test_group_message_without_mention_is_ignored(hub: Hub) -> None:
    await hub.start()
    await hub.send(hub.message("lunch?", chat_kind="group", mentions_bot=False))
    await hub.send(hub.message("/help", chat_kind="group", mentions_bot=False))
    await hub.send(hub.message("hi bot", chat_kind="group", mentions_bot=True))
    await hub.settle()
    assert len(await hub.replies()) == 1  # the /help
    assert [c.text for c in await hub.commands()] == ["hi bot"]


async def test_messages_from_an_alert_source_raise_an_alert(hub: Hub) -> None:
    source = "mon-" + hub.tenant
    rules = RouterRules(alert_sources=(AlertSource(name=source, chat="oc_mon", level="critical"),))
    await hub.start(rules=rules)
    await hub.send(hub.message("db-1 down\nno heartbeat for 60 s", chat_id="oc_mon"))
    await hub.settle()
    alerts = await hub.outputs(subjects.alert("critical", source), AlertRaised)
    assert [(a.data.level, a.data.title) for a in alerts] == [("critical", "db-1 down")]
    assert await hub.commands() == []


def limited(scope: str) -> float:
    return REGISTRY.get_sample_value("zhongshu_router_rate_limited_total", {"scope": scope}) or 0


class Counting:
    """Counts the events one replica handled."""

    def __init__(self, router: Any) -> None:
        self.inner = router.handle
        self.count = 0
        router.handle = self.handle

    async def handle(self, env: Envelope[Any], delivery: Any) -> None:
        self.count += 1
        await self.inner(env, delivery)


async def test_a_flood_from_one_user_is_limited_across_two_replicas(hub: Hub) -> None:
    config = hub.config("    rate_limit: {per_user: 3/min}\n")
    replicas = [await hub.start(config), await hub.start(config)]
    counters = [Counting(r.deps.router) for r in replicas]
    before = limited("user")
    for i in range(12):
        await hub.send(hub.message(f"question {i}"))
        await asyncio.sleep(0.03)  # let both replicas' pull requests take turns
    await hub.settle()
    assert all(c.count > 0 for c in counters), [c.count for c in counters]
    assert len(await hub.commands()) == 3
    replies = await hub.replies()
    assert len(replies) == 1
    assert replies[0].text.startswith("You are sending messages too fast")
    assert limited("user") - before == 9
    # Another user is not affected.
    await hub.send(hub.message("me too", user="ou_carol"))
    await hub.settle()
    assert len(await hub.commands()) == 4


async def test_a_redelivered_message_yields_no_second_reply_and_counts_once(hub: Hub) -> None:
    await hub.start(hub.config("    rate_limit: {per_user: 2/min}\n"))
    help_event = hub.message("/help")
    # The same envelope stored twice (different Nats-Msg-Id): a redelivery, as the router sees it.
    inbound_id = await hub.send(help_event, event_id="dup-" + hub.tenant, msg_id="a")
    await hub.send(help_event, event_id=inbound_id, msg_id="b")
    await hub.send(hub.message("then a question"))
    await hub.settle()
    replies = await hub.replies()
    assert [r.reply_id for r in replies] == [derive_msg_id(inbound_id, domain.STAGE_REPLY)]
    assert len(await hub.commands()) == 1  # the redelivery did not use up the limit


@contextlib.asynccontextmanager
async def live_config(hub: Hub) -> AsyncIterator[None]:
    """The session's ``config`` bucket is shared: put back what it held before the test."""
    from nats.js.errors import KeyNotFoundError

    from zhongshu.contracts.streams import CONFIG_KV
    from zhongshu.runtime.liveconfig import CONFIG_KEY

    bucket = await hub.js.key_value(CONFIG_KV.bucket)
    try:
        previous: bytes | None = (await bucket.get(CONFIG_KEY)).value
    except KeyNotFoundError:
        previous = None
    try:
        yield
    finally:
        if previous is None:
            await bucket.delete(CONFIG_KEY)
        else:
            await bucket.put(CONFIG_KEY, previous)


async def test_a_config_change_pushed_to_kv_is_applied_without_restart(hub: Hub) -> None:
    from zhongshu.runtime.liveconfig import push

    async with live_config(hub):
        await push(hub.js, hub.yaml())
        await hub.start(live=True)
        await hub.send(hub.message("before", user="ou_dave"))
        await hub.settle()
        assert [c.text for c in await hub.commands()] == ["before"]

        await push(hub.js, hub.yaml("    access: {deny: [ou_dave]}\n"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not await hub.replies():
            assert loop.time() < deadline, "the pushed deny list was not applied"
            await hub.send(hub.message("after", user="ou_dave"))
            await hub.settle()
        assert [r.text for r in await hub.replies()][:1] == [RouterRules().refusal_text]


async def test_routing_rules_in_the_live_configuration_apply_without_restart(hub: Hub) -> None:
    from zhongshu.runtime.liveconfig import push

    async with live_config(hub):
        await push(hub.js, hub.yaml())
        await hub.start(live=True)
        await hub.send(hub.message("please ship it now"))
        await hub.settle()
        assert [c.command for c in await hub.commands()] == ["chat"]

        rules = "routing:\n  rules: [{command: deploy, keyword: ship it}]\n"
        await push(hub.js, hub.yaml() + rules)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while [c.command for c in await hub.commands()][-1:] != ["deploy"]:
            assert loop.time() < deadline, "the pushed routing rule was not applied"
            await hub.send(hub.message("please ship it now"))
            await hub.settle()


def alert_click(hub: Hub, user: str, op: str) -> CardActionReceived:
    """A click on the card of this test's alert (its key unique: the bus is shared)."""
    base = example(CardActionReceived)
    return msgspec.structs.replace(
        base,
        app=hub.app,
        tenant=hub.tenant,
        user=msgspec.structs.replace(base.user, id=user, open_id=user, name="Ada"),
        action={CARD_VALUE_KEY: "k-" + hub.tenant, "op": op},
        message_id="om_card",
    )


async def test_an_admins_click_on_an_alert_card_requests_the_action_once(hub: Hub) -> None:
    await hub.start(hub.config("    access: {admins: [ou_admin]}\n"))
    click = alert_click(hub, "ou_admin", "acknowledge")
    inbound_id = await hub.send(click)
    await hub.send(click, event_id=inbound_id, msg_id="again-" + inbound_id)  # redelivered
    await hub.settle()
    requests = await hub.outputs(subjects.alert_action("k-" + hub.tenant), AlertActionRequested)
    assert [r.id for r in requests] == [derive_msg_id(inbound_id, domain.STAGE_ALERT_ACTION)]
    request = requests[0].data
    assert (request.key, request.action, request.message_id, request.chat_id) == (
        "k-" + hub.tenant,
        "acknowledge",
        "om_card",
        click.chat_id,
    )
    # Named as the click says (else the contacts are asked: test_departments).
    assert request.actor == AlertActor(id="ou_admin", name="Ada", platform="feishu", app=hub.app)
    assert await hub.commands() == []  # never the agent's, whatever card_actions says
    assert await hub.outputs(subjects.audit(hub.tenant, "alert"), AuditRecorded) == []


async def test_a_non_admins_click_on_an_alert_card_changes_nothing_and_is_audited(
    hub: Hub,
) -> None:
    await hub.start(hub.config("    access: {admins: [ou_admin], deny: [ou_banned]}\n"))
    await hub.send(alert_click(hub, "ou_alice", "resolve"))
    await hub.send(alert_click(hub, "ou_banned", "resolve"))
    await hub.settle()
    assert await hub.outputs(subjects.alert_action("k-" + hub.tenant), AlertActionRequested) == []
    audits = await hub.outputs(subjects.audit(hub.tenant, "alert"), AuditRecorded)
    assert sorted((a.data.actor, a.data.action, a.data.outcome) for a in audits) == [
        ("ou_alice", "alert.denied", "denied"),
        ("ou_banned", "alert.denied", "denied"),
    ]
    assert all(a.data.target == f"alert/k-{hub.tenant}" for a in audits)
    assert await hub.commands() == []
    assert await hub.replies() == []
