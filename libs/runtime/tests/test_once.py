"""Claiming events once (runtime.once): a late stored copy of an event yields no output and is
acked, whichever replica fetches it, and a redelivered copy keeps its own claim."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import MessageReceived
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.contracts.streams import DEDUPE_KV
from zhongshu.devstack.testing import collect, eventually
from zhongshu.runtime import Delivery, Service, ServiceSettings, once


async def a_stream_with_a_short_window(js: JetStreamContext) -> tuple[str, str]:
    """A stream whose duplicate window lapses in 0.1 s: it plays the hours between a platform
    event and its late retry, which the window cannot catch."""
    name = "ONCE_" + uuid.uuid4().hex[:10]
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"], duplicate_window=0.1)
    return name, f"{name.lower()}.in"


async def store(
    js: JetStreamContext, subject: str, msg_id: str, text: str = "hi", *, late: bool = False
) -> int:
    """Store an event as ingress does; ``late`` marks a copy the platform sent long after."""
    event = msgspec.structs.replace(example(MessageReceived), text=text)
    env = wire.make_envelope(event, id=msg_id, source="test", tenant="acme")
    headers = {H.MSG_ID: msg_id, **({H.LATE_COPY: "1"} if late else {})}
    ack = await js.publish(subject, wire.encode(env), headers=headers)
    assert not ack.duplicate
    return ack.seq


def claiming_service(stream: str, subject: str, seen: list[str], behaviour: Any = None) -> Service:
    service = Service("once-" + uuid.uuid4().hex[:6])

    @service.consumes(
        stream=stream,
        subjects=subject,
        durable=f"{stream}-handler",
        event=MessageReceived,
        claim_once=True,
        backoff_s=(0.1,),
    )
    async def handle(deps: None, env: Envelope[MessageReceived], delivery: Delivery) -> None:
        if behaviour is not None:
            await behaviour(env, delivery)
        seen.append(env.data.text)
        out = wire.make_envelope(env.data, id=derive_msg_id(env.id, "out"), source="t", tenant="a")
        await delivery.publish_envelope(subject.replace(".in", ".out"), out)

    return service


async def settled(js: JetStreamContext, stream: str) -> int:
    """Messages the consumer has not acked, once the server has applied the acks."""
    for _ in range(50):
        info = await js.consumer_info(stream, f"{stream}-handler")
        if not info.num_ack_pending and not info.num_pending:
            return 0
        await asyncio.sleep(0.1)
    return int(info.num_ack_pending or 0) + int(info.num_pending or 0)


async def test_a_late_copy_is_acked_unhandled_by_any_replica(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    stream, subject = await a_stream_with_a_short_window(js)
    msg_id = f"feishu:acme:{uuid.uuid4().hex}"
    await store(js, subject, msg_id, "original")
    await asyncio.sleep(0.3)
    await store(js, subject, msg_id, "late copy", late=True)  # stored again: window lapsed
    await store(js, subject, f"feishu:acme:{uuid.uuid4().hex}", "another event")
    seen: list[str] = []
    replicas = [claiming_service(stream, subject, seen) for _ in range(2)]
    for replica in replicas:
        await replica.start(ServiceSettings(nats_url=provisioned_nats_url))
    try:
        outputs = await collect(js, subject.replace(".in", ".out"), count=2)
        assert await settled(js, stream) == 0
        await asyncio.sleep(0.2)
        texts = [wire.decode(m.data, MessageReceived).data.text for m in outputs]
        assert sorted(texts) == ["another event", "original"]
        assert len(await collect(js, subject.replace(".in", ".out"))) == 2
        duplicates = sum(
            REGISTRY.get_sample_value(
                "zhongshu_messages_duplicate_total",
                {"service": r.name, "consumer": f"{stream}-handler"},
            )
            or 0
            for r in replicas
        )
        assert duplicates == 1
        bucket = await js.key_value(DEDUPE_KV.bucket)
        assert await once.seen(bucket, msg_id)
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_redelivered_copy_keeps_its_own_claim(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    stream, subject = await a_stream_with_a_short_window(js)
    await store(js, subject, f"feishu:acme:{uuid.uuid4().hex}", "flaky")
    attempts: list[int] = []

    async def fail_once(env: Envelope[MessageReceived], delivery: Delivery) -> None:
        attempts.append(delivery.num_delivered)
        if len(attempts) == 1:
            raise RuntimeError("the handler's first attempt fails after the claim")

    seen: list[str] = []
    service = claiming_service(stream, subject, seen, fail_once)
    await service.start(ServiceSettings(nats_url=provisioned_nats_url))
    try:
        await eventually(lambda: seen == ["flaky"])
        assert attempts == [1, 2]
        assert await settled(js, stream) == 0
    finally:
        await service.stop()


async def test_an_unclaimed_event_is_not_seen(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    bucket = await js.key_value(DEDUPE_KV.bucket)
    assert not await once.seen(bucket, f"feishu:acme:{uuid.uuid4().hex}")


def test_claim_keys_are_kv_safe_and_case_sensitive() -> None:
    lower, upper = once.event_key("dingtalk:a:msgabc=="), once.event_key("dingtalk:a:msgABC==")
    assert lower != upper
    assert all(c.isalnum() or c == "." for c in lower)
