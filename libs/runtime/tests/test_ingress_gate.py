"""The ingress gate: one platform event is stored once, however often and wherever it arrives."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AuditRecorded, MessageReceived
from zhongshu.contracts.examples import example
from zhongshu.contracts.streams import DEDUPE_KV
from zhongshu.devstack.testing import collect
from zhongshu.runtime import bus, once
from zhongshu.runtime.ingress import IngressGate, Outcome, Rejected


async def gate(url: str) -> IngressGate:
    client = await bus.connect(url, name="test-ingress")
    js = bus.jetstream(client)
    return await IngressGate.open(
        service="ingress-test", platform="feishu", publisher=bus.Publisher(js), js=js
    )


def an_event(tenant: str, event_id: str) -> wire.Envelope[MessageReceived]:
    message = msgspec.structs.replace(example(MessageReceived), tenant=tenant)
    return wire.make_envelope(message, id=event_id, source="test", tenant=tenant)


async def test_a_late_retry_of_a_claimed_event_is_not_stored_again(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    # A stream of its own whose duplicate window lapses in 0.1 s plays the hours between a
    # Feishu event and its last retry.
    tenant = "t" + uuid.uuid4().hex[:8]
    subject = f"late.{tenant}.in"
    await js.add_stream(name=f"LATE_{tenant}", subjects=[f"late.{tenant}.>"], duplicate_window=0.1)
    first, retry = await gate(provisioned_nats_url), await gate(provisioned_nats_url)
    env = an_event(tenant, f"feishu:{tenant}:om_1")
    now = datetime.now(UTC)
    assert await first.accept(subject=subject, envelope=env, created_at=now) is (Outcome.PUBLISHED)
    await asyncio.sleep(0.3)
    # Unclaimed (not routed yet), a late copy is stored: the router's claim drops it later.
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    assert await retry.accept(subject=subject, envelope=env, created_at=hours_ago) is (
        Outcome.PUBLISHED
    )
    # Once the router claimed the event, a late copy is answered without being stored.
    bucket = await js.key_value(DEDUPE_KV.bucket)
    await bucket.create(once.event_key(env.id), b"1")
    await asyncio.sleep(0.3)
    assert await retry.accept(subject=subject, envelope=env, created_at=hours_ago) is (
        Outcome.DUPLICATE
    )
    stored = await collect(js, subject)
    assert len(stored) == 2
    # The late copy is marked, so the router waits for its claim before sending anything.
    assert [(m.headers or {}).get(H.LATE_COPY) for m in stored] == [None, "1"]


async def test_a_fresh_copy_is_left_to_the_streams_duplicate_window(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    g = await gate(provisioned_nats_url)
    subject = subjects.chat_inbound("feishu", tenant)
    env = an_event(tenant, f"feishu:{tenant}:om_2")
    now = datetime.now(UTC)
    for _ in range(3):  # the platform's quick retries, and a second replica
        await g.accept(subject=subject, envelope=env, created_at=now)
    assert len(await collect(js, subject)) == 1


async def test_ids_differing_only_in_case_are_different_events(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    g = await gate(provisioned_nats_url)
    subject = subjects.chat_inbound("feishu", tenant)
    for key in ("msgAbC==", "msgabc=="):
        env = an_event(tenant, f"x:{tenant}:{key}")
        assert await g.accept(subject=subject, envelope=env) is Outcome.PUBLISHED
    assert len(await collect(js, subject)) == 2


async def test_a_refused_request_is_audited_without_the_secret(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    g = await gate(provisioned_nats_url)
    await g.reject(
        Rejected(401, "bad signature"), app="acme-feishu", tenant=tenant, remote="10.0.0.9"
    )
    [audit] = await collect(js, subjects.audit(tenant, "security"), count=1)
    event = wire.decode(audit.data, AuditRecorded).data
    assert (event.action, event.outcome, event.actor) == (
        "feishu.webhook.rejected",
        "denied",
        "10.0.0.9",
    )
    assert streams.stream_for_subject(audit.subject).name == "AUDIT"
