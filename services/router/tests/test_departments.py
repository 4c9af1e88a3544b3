"""The department whitelist on a real JetStream and Redis, against the fake Feishu and DingTalk
contact APIs: a sender is admitted by their department, the answer is remembered, a platform
failure refuses (fail closed) and is counted, and apps without department rules never ask."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    AuditRecorded,
    CardActionReceived,
    CommandRequested,
    MessageReceived,
    ReplyGenerated,
    Sender,
)
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY, AlertActionRequested
from zhongshu.contracts.examples import example
from zhongshu.devstack.fakes.base_openapi import Injected
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.testing import collect, drained
from zhongshu.router.main import build_service
from zhongshu.router.rules import RouterRules
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime.hubconfig import parse_config
from zhongshu.runtime.liveconfig import StaticConfig
from zhongshu.runtime.service import Service

REFUSAL = RouterRules().refusal_text


class Platform:
    """One platform's fake and how its apps, senders and departments are written."""

    def __init__(self, name: str, run: str, *, contact_limit: int | None = None) -> None:
        self.name = name
        self.app_key, self.secret = f"app-{run}", f"secret-{run}"
        self.fake: FakeFeishuOpenAPI | FakeDingTalkOpenAPI
        if name == "feishu":
            self.fake = FakeFeishuOpenAPI(
                app_id=self.app_key,
                app_secret=self.secret,
                contact_limit=50 if contact_limit is None else contact_limit,
            )
        else:
            self.fake = FakeDingTalkOpenAPI(
                app_key=self.app_key,
                app_secret=self.secret,
                contact_limit=20 if contact_limit is None else contact_limit,
            )

    def credentials(self) -> str:
        if self.name == "feishu":
            return f"    feishu: {{app_id: {self.app_key}, app_secret: {self.secret}}}\n"
        return f"    dingtalk: {{app_key: {self.app_key}, app_secret: {self.secret}}}\n"

    def sender(self, user: str) -> Sender:
        if self.name == "feishu":
            return Sender(id=user, open_id=user)
        return Sender(id=user, staff_id=user)

    def put(self, user: str, department: str, *, name: str = "") -> None:
        """``department`` is a name: Feishu ids it ``od-<name>``, DingTalk by a number."""
        if isinstance(self.fake, FakeFeishuOpenAPI):
            self.fake.set_departments(user, self.department_id(department), name=name)
        else:
            self.fake.set_departments(user, int(self.department_id(department)), name=name)

    def department_id(self, department: str) -> str:
        if self.name == "feishu":
            return f"od-{department}"
        return str(sum(department.encode()))

    def only(self, department: str, *, users: str = "[]") -> str:
        """An ``access`` rule listing one department (quoted: DingTalk's ids are numbers)."""
        return f"{{users: {users}, departments: ['{self.department_id(department)}']}}"

    @property
    def looked_up(self) -> list[str]:
        return self.fake.contact_requests


class Hub:
    def __init__(self, js: JetStreamContext, nats_url: str, redis_url: str, p: Platform) -> None:
        self.js, self.nats_url, self.redis_url, self.p = js, nats_url, redis_url, p
        self.tenant = "t" + uuid.uuid4().hex[:10]
        self.app = "app-" + self.tenant
        self.services: list[Service] = []

    async def start(self, access: str) -> None:
        yaml = (
            f"apps:\n  {self.app}:\n    tenant: {self.tenant}\n    platform: {self.p.name}\n"
            f"{self.p.credentials()}    access: {access}\n"
        )
        service = build_service(config=StaticConfig(parse_config(yaml, environ={})))
        settings: dict[str, Any] = {
            "nats_url": self.nats_url,
            "redis_url": self.redis_url,
            "ack_wait_s": 5,
            "feishu_base_url": self.p.fake.base_url,
            "dingtalk_oapi_url": self.p.fake.base_url,
        }
        await service.start(RouterSettings(**settings))
        self.services.append(service)

    async def send(self, text: str, user: str) -> str:
        base = example(MessageReceived)
        message = msgspec.structs.replace(
            base,
            platform=self.p.name,
            app=self.app,
            tenant=self.tenant,
            chat_kind="p2p",
            chat_id="c_" + self.tenant,
            sender=self.p.sender(user),
            text=text,
        )
        env = wire.make_envelope(message, id=uuid.uuid4().hex, source="test", tenant=self.tenant)
        await self.js.publish(
            subjects.chat_inbound(self.p.name, self.tenant),
            wire.encode(env),
            headers={H.MSG_ID: env.id},
        )
        return env.id

    async def settle(self, within_s: float = 15) -> None:
        await drained(self.js, streams.CHAT_INBOUND.name, "router", within_s=within_s)

    async def _decoded(self, subject: str, cls: type[Any]) -> list[Any]:
        decoder = wire.decoder(cls)
        return [decoder.decode(m.data).data for m in await collect(self.js, subject, within_s=2)]

    async def commanded(self) -> list[str]:
        """Who got through: the senders of the commands handed to the agent."""
        subject = subjects.chat_command(self.p.name, self.tenant)
        commands: list[CommandRequested] = await self._decoded(subject, CommandRequested)
        return [c.message.sender.id for c in commands if c.message is not None]

    async def replies(self) -> list[str]:
        subject = subjects.chat_reply(self.p.name, self.tenant)
        return [r.text for r in await self._decoded(subject, ReplyGenerated)]

    async def audits(self) -> list[tuple[str, str, str]]:
        audits: list[AuditRecorded] = await self._decoded(
            subjects.audit(self.tenant, "access"), AuditRecorded
        )
        return [(a.actor, a.action, a.outcome) for a in audits]


@pytest.fixture(params=["feishu", "dingtalk"])
def platform_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def hub(
    js: JetStreamContext, provisioned_nats_url: str, redis_url: str, platform_name: str
) -> AsyncIterator[Hub]:
    platform = Platform(platform_name, uuid.uuid4().hex[:8])
    async with platform.fake:
        hub = Hub(js, provisioned_nats_url, redis_url, platform)
        try:
            yield hub
        finally:
            for service in hub.services:
                await service.stop()


def lookups(platform: str, outcome: str) -> float:
    labels = {"platform": platform, "outcome": outcome}
    return REGISTRY.get_sample_value("zhongshu_router_department_lookups_total", labels) or 0


async def test_a_user_in_a_listed_department_passes_and_one_in_another_is_refused(
    hub: Hub,
) -> None:
    hub.p.put("alice", "sales")
    hub.p.put("bob", "eng")
    await hub.start(hub.p.only("sales"))
    await hub.send("quarterly numbers?", user="alice")
    await hub.send("quarterly numbers?", user="bob")
    await hub.settle()
    assert await hub.commanded() == ["alice"]
    assert await hub.replies() == [REFUSAL]
    assert await hub.audits() == [("bob", "chat.denied", "denied")]


async def test_the_departments_are_looked_up_once_for_two_messages(hub: Hub) -> None:
    hub.p.put("alice", "sales")
    await hub.start(hub.p.only("sales"))
    before = lookups(hub.p.name, "cached")
    await hub.send("first", user="alice")
    await hub.settle()
    await hub.send("second", user="alice")
    await hub.settle()
    assert await hub.commanded() == ["alice", "alice"]
    assert hub.p.looked_up == ["alice"]
    assert lookups(hub.p.name, "cached") - before == 1


async def test_a_user_the_platform_does_not_know_is_refused_and_remembered(hub: Hub) -> None:
    await hub.start(hub.p.only("sales"))
    await hub.send("hello", user="stranger")
    await hub.settle()
    await hub.send("hello again", user="stranger")
    await hub.settle()
    assert await hub.replies() == [REFUSAL, REFUSAL]
    assert hub.p.looked_up == ["stranger"]  # the negative answer was kept too


async def test_a_platform_error_refuses_is_counted_and_is_not_remembered(hub: Hub) -> None:
    hub.p.put("alice", "sales")
    await hub.start(hub.p.only("sales"))
    before = lookups(hub.p.name, "error")
    body = {"code": 55001, "msg": "internal error"}
    if hub.p.name == "dingtalk":
        body = {"errcode": -1, "errmsg": "系统繁忙"}
    hub.p.fake.inject(Injected(status=500 if hub.p.name == "feishu" else 200, body=body))
    await hub.send("during the outage", user="alice")
    await hub.settle()
    assert await hub.commanded() == []  # fail closed: only a department would admit alice
    assert await hub.replies() == [REFUSAL]
    assert await hub.audits() == [("alice", "chat.denied", "denied")]
    assert lookups(hub.p.name, "error") - before == 1
    await hub.send("after it", user="alice")
    await hub.settle()
    assert await hub.commanded() == ["alice"]
    assert hub.p.looked_up == ["alice", "alice"]


@pytest.mark.parametrize("platform_name", ["feishu", "dingtalk"])
async def test_a_rate_limited_lookup_refuses_and_is_counted(
    js: JetStreamContext, provisioned_nats_url: str, redis_url: str, platform_name: str
) -> None:
    platform = Platform(platform_name, uuid.uuid4().hex[:8], contact_limit=0)
    async with platform.fake:
        hub = Hub(js, provisioned_nats_url, redis_url, platform)
        platform.put("alice", "sales")
        try:
            await hub.start(platform.only("sales"))
            before = lookups(platform_name, "rate_limited")
            await hub.send("hello", user="alice")
            await hub.settle()
            assert await hub.replies() == [REFUSAL]
            assert lookups(platform_name, "rate_limited") - before == 1
        finally:
            for service in hub.services:
                await service.stop()


async def test_apps_without_department_rules_make_no_lookup(hub: Hub) -> None:
    await hub.start("{users: [alice]}")
    await hub.send("hi", user="alice")
    await hub.send("hi", user="mallory")
    await hub.settle()
    assert await hub.commanded() == ["alice"]
    assert await hub.replies() == [REFUSAL]
    assert hub.p.looked_up == []
    assert hub.p.fake.token_requests == 0


async def test_a_user_listed_by_name_is_not_looked_up_even_with_department_rules(
    hub: Hub,
) -> None:
    await hub.start(hub.p.only("sales", users="[alice]"))
    await hub.send("hi", user="alice")
    await hub.settle()
    assert await hub.commanded() == ["alice"]
    assert hub.p.looked_up == []


async def test_an_admins_alert_action_names_the_admin_as_the_contacts_do(hub: Hub) -> None:
    hub.p.put("admin-1", "ops", name="Li Lei")
    await hub.start("{admins: [admin-1]}")
    key = "k-" + hub.tenant
    click = msgspec.structs.replace(
        example(CardActionReceived),
        platform=hub.p.name,
        app=hub.app,
        tenant=hub.tenant,
        user=hub.p.sender("admin-1"),  # a card callback carries ids, no name
        action={CARD_VALUE_KEY: key, "op": "acknowledge"},
    )
    env = wire.make_envelope(click, id=uuid.uuid4().hex, source="test", tenant=hub.tenant)
    await hub.js.publish(
        subjects.chat_inbound(hub.p.name, hub.tenant), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    await hub.settle()
    [request] = await hub._decoded(subjects.alert_action(key), AlertActionRequested)
    assert (request.actor.id, request.actor.name) == ("admin-1", "Li Lei")
    assert hub.p.looked_up == ["admin-1"]
