"""The consume loop on a real JetStream: ack after effect, retries, DLQ, keepalive, drain."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from nats.js.api import ConsumerInfo
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AlertRaised, MessageReceived, ReplyGenerated
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.devstack.testing import collect, eventually
from zhongshu.runtime import Delivery, Service, ServiceSettings


def tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def publish_inbound(js: JetStreamContext, tenant: str, texts: list[str]) -> list[str]:
    ids = []
    for i, text in enumerate(texts):
        event = msgspec.structs.replace(example(MessageReceived), tenant=tenant, text=text)
        env = wire.make_envelope(event, id=f"{tenant}-in-{i}", source="test", tenant=tenant)
        await js.publish(
            subjects.chat_inbound("feishu", tenant),
            wire.encode(env),
            headers={H.MSG_ID: env.id},
        )
        ids.append(env.id)
    return ids


def echo_service(tenant: str, behaviour: Any = None, **options: Any) -> Service:
    """A service whose handler replies to each inbound message, after ``behaviour`` (which may
    raise or sleep)."""
    service = Service(f"svc-{tenant}")

    @service.consumes(
        stream=streams.CHAT_INBOUND.name,
        subjects=subjects.chat_inbound("feishu", tenant),
        durable=f"echo-{tenant}",
        event=MessageReceived,
        **options,
    )
    async def handle(deps: None, env: Envelope[MessageReceived], delivery: Delivery) -> None:
        if behaviour is not None:
            await behaviour(env, delivery)
        reply = ReplyGenerated(
            reply_id=derive_msg_id(env.id, "echo"),
            platform="feishu",
            app=env.data.app,
            tenant=tenant,
            chat_id=env.data.chat_id,
            text=env.data.text,
            final=True,
        )
        out = wire.make_envelope(reply, id=reply.reply_id, source="test", tenant=tenant)
        await delivery.publish_envelope(subjects.chat_reply("feishu", tenant), out)

    return service


async def settled_consumer(js: JetStreamContext, durable: str) -> ConsumerInfo:
    """Consumer info once the server has applied the acks it received (it applies them
    asynchronously, so a read right after the last ack may still count it as pending)."""
    info = await js.consumer_info(streams.CHAT_INBOUND.name, durable)
    for _ in range(50):
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.1)
        info = await js.consumer_info(streams.CHAT_INBOUND.name, durable)
    return info


async def run(service: Service, url: str) -> Service:
    await service.start(ServiceSettings(nats_url=url, drain_timeout_s=10))
    return service


async def test_a_repeated_msg_id_is_stored_once(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    first = await publish_inbound(js, t, ["hello"])
    again = await js.publish(
        subjects.chat_inbound("feishu", t), b"{}", headers={H.MSG_ID: first[0]}
    )
    assert again.duplicate
    assert len(await collect(js, subjects.chat_inbound("feishu", t))) == 1


async def test_every_message_is_answered_once_and_acked(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    service = await run(echo_service(t), provisioned_nats_url)
    try:
        await publish_inbound(js, t, [f"m{i}" for i in range(300)])
        replies = await collect(js, subjects.chat_reply("feishu", t), count=300)
        assert sorted(m.header[H.MSG_ID] for m in replies if m.header) == sorted(
            derive_msg_id(f"{t}-in-{i}", "echo") for i in range(300)
        )
        info = await settled_consumer(js, f"echo-{t}")
        assert info.num_ack_pending == 0
        assert info.num_redelivered == 0
    finally:
        await service.stop()


async def test_poison_message_is_dead_lettered_with_an_alert_while_later_messages_flow(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    attempts = 0

    async def explode_on_poison(env: Envelope[MessageReceived], _: Delivery) -> None:
        nonlocal attempts
        if env.data.text == "poison":
            attempts += 1
            raise RuntimeError("cannot digest this")

    service = await run(
        echo_service(t, explode_on_poison, max_deliver=3, backoff_s=(0.05,)),
        provisioned_nats_url,
    )
    try:
        await publish_inbound(js, t, ["before", "poison", "after-1", "after-2"])
        replies = await collect(js, subjects.chat_reply("feishu", t), count=3)
        assert len(replies) == 3
        dead = await collect(js, subjects.dlq(streams.CHAT_INBOUND.name, f"echo-{t}"), count=1)
        assert len(dead) == 1
        headers = dead[0].header or {}
        assert headers[H.DLQ_ERROR] == "RuntimeError: cannot digest this"
        assert headers[H.DLQ_SUBJECT] == subjects.chat_inbound("feishu", t)
        assert headers[H.DLQ_DELIVERIES] == "3"
        assert wire.decode(dead[0].data, MessageReceived).data.text == "poison"
        assert attempts == 3
        alerts = [
            wire.decode(m.data, AlertRaised)
            for m in await collect(js, subjects.alert("error", f"svc-{t}"), count=1)
        ]
        assert alerts[0].data.level == "error"
        assert "cannot digest this" in alerts[0].data.detail
    finally:
        await service.stop()


async def test_undecodable_message_is_dead_lettered_on_its_first_delivery(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    service = await run(echo_service(t, max_deliver=5), provisioned_nats_url)
    try:
        await js.publish(
            subjects.chat_inbound("feishu", t), b"not json", headers={H.MSG_ID: f"{t}-bad"}
        )
        await publish_inbound(js, t, ["fine"])
        dead = await collect(js, subjects.dlq(streams.CHAT_INBOUND.name, f"echo-{t}"), count=1)
        assert (dead[0].header or {})[H.DLQ_DELIVERIES] == "1"
        assert "cannot decode" in (dead[0].header or {})[H.DLQ_ERROR]
        assert len(await collect(js, subjects.chat_reply("feishu", t), count=1)) == 1
    finally:
        await service.stop()


async def test_a_publish_that_fails_is_retried_not_acked(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    calls = 0

    async def first_output_goes_nowhere(env: Envelope[MessageReceived], d: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # no stream holds this subject: the PubAck is an error
            await d.publish("nowhere.at.all", b"x", msg_id=f"{env.id}:lost")

    service = await run(
        echo_service(t, first_output_goes_nowhere, backoff_s=(0.05,)), provisioned_nats_url
    )
    try:
        await publish_inbound(js, t, ["retry me"])
        await eventually(lambda: calls == 2)
        # The retry published the reply again with the same id: stored once.
        assert len(await collect(js, subjects.chat_reply("feishu", t))) == 1
    finally:
        await service.stop()


async def test_keepalive_holds_a_long_handler_past_ack_wait_without_redelivery(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    calls = 0

    async def slow(_: Envelope[MessageReceived], delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        async with delivery.keepalive():
            await asyncio.sleep(3.0)

    service = await run(echo_service(t, slow, ack_wait_s=1.0, concurrency=4), provisioned_nats_url)
    try:
        await publish_inbound(js, t, ["long"])
        assert len(await collect(js, subjects.chat_reply("feishu", t), count=1, within_s=15)) == 1
        assert calls == 1
    finally:
        await service.stop()


async def test_concurrent_handlers_answer_every_message_once(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    in_flight = peak = 0

    async def io_bound(_: Envelope[MessageReceived], __: Delivery) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1

    service = await run(echo_service(t, io_bound, concurrency=8), provisioned_nats_url)
    try:
        await publish_inbound(js, t, [f"m{i}" for i in range(64)])
        replies = await collect(js, subjects.chat_reply("feishu", t), count=64)
        assert len({(m.header or {})[H.MSG_ID] for m in replies}) == 64
        assert 1 < peak <= 8
    finally:
        await service.stop()


async def test_stop_lets_in_flight_handlers_finish_and_hands_back_the_rest(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    started = asyncio.Event()
    begun = finished = 0

    async def slow(_: Envelope[MessageReceived], __: Delivery) -> None:
        nonlocal begun, finished
        begun += 1
        started.set()
        await asyncio.sleep(0.5)
        finished += 1

    service = await run(echo_service(t, slow, concurrency=4), provisioned_nats_url)
    await publish_inbound(js, t, ["a", "b", "c", "d"])
    await asyncio.wait_for(started.wait(), 10)
    await service.stop()
    assert finished == begun  # no handler was cut off
    replies = await collect(js, subjects.chat_reply("feishu", t))
    assert len(replies) == finished
    # Whatever it fetched but had not started was handed back (nak), not left for ack_wait:
    # the next replica answers exactly the rest.
    successor = await run(echo_service(t), provisioned_nats_url)
    try:
        replies = await collect(js, subjects.chat_reply("feishu", t), count=5, within_s=5)
        assert len({(m.header or {})[H.MSG_ID] for m in replies}) == len(replies) == 4
        info = await settled_consumer(js, f"echo-{t}")
        assert info.num_ack_pending == 0
    finally:
        await successor.stop()


async def test_a_schedule_fires_into_its_target_subject(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    t = tenant()
    target = subjects.schedule_fired(t, "every-second")
    await js.publish(
        subjects.schedule(t, "every-second"),
        b"{}",
        headers={H.SCHEDULE: "@every 1s", H.SCHEDULE_TARGET: target},
    )
    fired = await collect(js, target, count=1, within_s=10)
    assert len(fired) == 1
    # TASKS sources the firings, so the agent sees them as ordinary task requests.
    requested = await collect(js, subjects.task_requested(t), count=2, within_s=10)
    assert len(requested) == 2


async def test_no_message_waits_for_redelivery_at_low_or_high_rates(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    """FastStream's batch mode stranded 3-8 % of messages at low rates until ack_wait; this loop
    must hand every fetched message to its handler on the first delivery."""
    t = tenant()
    service = await run(echo_service(t), provisioned_nats_url)
    try:
        for i in range(40):  # low rate: one message every 30 ms, across idle and busy fetches
            await publish_inbound_one(js, t, i)
            await asyncio.sleep(0.03)
        await publish_inbound(js, t, [f"burst{i}" for i in range(3000)])  # high rate
        replies = await collect(js, subjects.chat_reply("feishu", t), count=3040, within_s=20)
        assert len(replies) == 3040
        info = await js.consumer_info(streams.CHAT_INBOUND.name, f"echo-{t}")
        assert info.num_redelivered == 0
        assert info.num_pending == 0
    finally:
        await service.stop()


async def publish_inbound_one(js: JetStreamContext, tenant: str, i: int) -> None:
    event = msgspec.structs.replace(example(MessageReceived), tenant=tenant, text=f"low{i}")
    env = wire.make_envelope(event, id=f"{tenant}-low-{i}", source="test", tenant=tenant)
    await js.publish(
        subjects.chat_inbound("feishu", tenant), wire.encode(env), headers={H.MSG_ID: env.id}
    )
