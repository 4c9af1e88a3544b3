"""A service's lifespan opens its resources once, hands them to every consumer as one typed
object, and closes them after the consumers have drained; a publish outside the declared
channels fails loudly (dead-lettered with an alert) instead of reaching the bus."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest
from nats.js.client import JetStreamContext

from zhongshu.contracts import channels, streams, subjects
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import MessageReceived, ReplyGenerated
from zhongshu.contracts.examples import example
from zhongshu.devstack.testing import collect, eventually
from zhongshu.runtime import Delivery, Service, ServiceSettings
from zhongshu.runtime.bus import SubjectGuard
from zhongshu.runtime.errors import RuntimeFailure, UndeclaredPublish


@dataclass
class Deps:
    prefix: str
    handled: list[str] = field(default_factory=list)
    closed: bool = False


def _tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _replying_service(
    tenant: str, *, publishes: list[channels.Channel], reply_on: str, opened: list[Deps]
) -> Service[ServiceSettings, Deps]:
    @contextlib.asynccontextmanager
    async def lifespan(svc: Service[ServiceSettings, Deps]) -> AsyncIterator[Deps]:
        deps = Deps(prefix=f"{svc.name}:")
        opened.append(deps)
        try:
            yield deps
        finally:
            deps.closed = True

    service = Service(f"svc-{tenant}", ServiceSettings, lifespan, publishes=publishes)

    @service.consumes(
        stream=streams.CHAT_INBOUND.name,
        subjects=subjects.chat_inbound("feishu", tenant),
        durable=f"lifespan-{tenant}",
        event=MessageReceived,
        max_deliver=2,
        backoff_s=(0.1,),
    )
    async def on_inbound(deps: Deps, env: Envelope[MessageReceived], delivery: Delivery) -> None:
        deps.handled.append(env.id)
        reply = ReplyGenerated(
            reply_id=f"{env.id}-reply",
            platform="feishu",
            app=env.data.app,
            tenant=tenant,
            chat_id=env.data.chat_id,
            text=deps.prefix + env.data.text,
            final=True,
        )
        out = wire.make_envelope(reply, id=reply.reply_id, source="test", tenant=tenant)
        await delivery.publish_envelope(reply_on, out)

    return service


async def _inbound(js: JetStreamContext, tenant: str) -> str:
    event = msgspec.structs.replace(example(MessageReceived), tenant=tenant, text="hi")
    env = wire.make_envelope(event, id=f"{tenant}-in", source="test", tenant=tenant)
    await js.publish(
        subjects.chat_inbound("feishu", tenant), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    return env.id


async def test_consumers_get_the_lifespans_object_and_it_closes_after_they_drain(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant, opened = _tenant(), []
    service = _replying_service(
        tenant,
        publishes=[channels.CHAT_REPLIES],
        reply_on=subjects.chat_reply("feishu", tenant),
        opened=opened,
    )
    with pytest.raises(RuntimeFailure):
        _ = service.deps  # not started: no resources yet
    await service.start(ServiceSettings(nats_url=provisioned_nats_url, drain_timeout_s=10))
    try:
        inbound = await _inbound(js, tenant)
        [reply] = await collect(js, subjects.chat_reply("feishu", tenant), count=1)
        assert service.deps is opened[0]
        assert opened[0].handled == [inbound]
        text = msgspec.json.decode(reply.data)["data"]["text"]
        assert text == f"svc-{tenant}:hi"
    finally:
        await service.stop()
    assert len(opened) == 1
    assert opened[0].closed


async def test_a_publish_outside_the_declared_channels_is_dead_lettered_not_sent(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant, opened = _tenant(), []
    service = _replying_service(
        tenant,
        publishes=[channels.CHAT_REPLIES],
        reply_on=subjects.chat_command("feishu", tenant),  # not declared
        opened=opened,
    )
    await service.start(ServiceSettings(nats_url=provisioned_nats_url, drain_timeout_s=10))
    try:
        await _inbound(js, tenant)
        dlq = subjects.dlq(streams.CHAT_INBOUND.name, f"lifespan-{tenant}")
        [dead] = await collect(js, dlq, count=1)
        assert dead.header is not None
        assert "UndeclaredPublish" in dead.header[H.DLQ_ERROR]
        assert subjects.chat_command("feishu", tenant) in dead.header[H.DLQ_ERROR]
        await eventually(lambda: opened[0].handled, "the handler ran")
        assert await collect(js, subjects.chat_command("feishu", tenant), within_s=0.5) == []
    finally:
        await service.stop()


def test_the_guard_allows_declared_channels_and_the_runtimes_own_subjects() -> None:
    service: Service[ServiceSettings, None] = Service(
        "router", ServiceSettings, publishes=[channels.CHAT_COMMANDS, channels.AUDIT]
    )
    guard = service.publish_guard()
    assert isinstance(guard, SubjectGuard)
    guard.check("chat.command.feishu.acme")
    guard.check("audit.acme.access")
    guard.check("dlq.chat_inbound.router")  # dead letters and their alerts: the runtime's
    guard.check("alert.error.router")
    guard.check("$KV.dedupe.abc")
    for subject in ("chat.reply.feishu.acme", "chat.command.feishu", "alert.critical.router"):
        with pytest.raises(UndeclaredPublish, match="declare it in Service"):
            guard.check(subject)


def test_a_service_that_declares_nothing_is_not_guarded() -> None:
    assert Service("legacy", ServiceSettings).publish_guard() is None


async def test_readiness_checks_see_the_lifespans_resources(provisioned_nats_url: str) -> None:
    class Store:
        def __init__(self) -> None:
            self.up = True

        async def ping(self) -> bool:
            if not self.up:
                raise ConnectionError("store down")
            return True

    store = Store()

    @contextlib.asynccontextmanager
    async def lifespan(svc: Service[ServiceSettings, Store]) -> AsyncIterator[Store]:
        yield store

    service = Service("ready-" + _tenant(), ServiceSettings, lifespan, publishes=[])
    service.readiness_ping("store", lambda deps: deps)
    checks = service._checks  # what /readyz runs
    assert await checks["store"]() is False  # before the lifespan ran
    await service.start(ServiceSettings(nats_url=provisioned_nats_url, drain_timeout_s=5))
    try:
        assert await checks["store"]() is True
        store.up = False
        assert await checks["store"]() is False
    finally:
        await service.stop()
    assert await checks["store"]() is False


async def test_consumer_options_can_come_from_settings(provisioned_nats_url: str) -> None:
    tenant = _tenant()
    service: Service[ServiceSettings, None] = Service(f"svc-{tenant}", publishes=[])

    @service.consumes(
        stream=streams.CHAT_INBOUND.name,
        subjects=subjects.chat_inbound("feishu", tenant),
        durable=f"options-{tenant}",
        event=MessageReceived,
        options_from=lambda settings: {"concurrency": int(settings.drain_timeout_s)},
    )
    async def on_inbound(deps: None, env: Envelope[MessageReceived], delivery: Delivery) -> None:
        return None  # pragma: no cover

    await service.start(ServiceSettings(nats_url=provisioned_nats_url, drain_timeout_s=3))
    try:
        assert [loop.spec.concurrency for loop in service.loops] == [3]
    finally:
        await service.stop()
