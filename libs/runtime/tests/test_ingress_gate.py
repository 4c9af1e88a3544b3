"""The ingress gate: one platform event is stored once, however often and wherever it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AuditRecorded, MessageReceived
from zhongshu.contracts.examples import example
from zhongshu.contracts.streams import DEDUPE_KV
from zhongshu.runtime import bus
from zhongshu.runtime.ingress import IngressGate, Outcome, Rejected
from zhongshu.runtime.testing import collect


async def gate(url: str) -> IngressGate:
    client = await bus.connect(url, name="test-ingress")
    js = bus.jetstream(client)
    return await IngressGate.open(
        service="ingress-test", platform="feishu", publisher=bus.Publisher(js), js=js
    )


def an_event(tenant: str, event_id: str) -> wire.Envelope[MessageReceived]:
    message = msgspec.structs.replace(example(MessageReceived), tenant=tenant)
    return wire.make_envelope(message, id=event_id, source="test", tenant=tenant)


async def test_a_late_retry_is_not_published_again(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    first, retry = await gate(provisioned_nats_url), await gate(provisioned_nats_url)
    subject = subjects.chat_inbound("feishu", tenant)
    env = an_event(tenant, f"feishu:{tenant}:om_1")
    assert await first.accept(dedupe_key="om_1", subject=subject, envelope=env) is Outcome.PUBLISHED
    await key_recorded(js)
    # Hours later, on another replica, with the stream's duplicate window long gone (played
    # here by a different message id, which the window cannot match): the durable key still
    # recognises it.
    late = an_event(tenant, f"feishu:{tenant}:om_1:late")
    assert await retry.accept(dedupe_key="om_1", subject=subject, envelope=late) is (
        Outcome.DUPLICATE
    )
    assert len(await collect(js, subject)) == 1


async def test_a_fresh_copy_is_left_to_the_streams_duplicate_window(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    g = await gate(provisioned_nats_url)
    subject = subjects.chat_inbound("feishu", tenant)
    env = an_event(tenant, f"feishu:{tenant}:om_2")
    now = datetime.now(UTC)
    for _ in range(3):  # the platform's quick retries, and a second replica
        await g.accept(dedupe_key="om_2", subject=subject, envelope=env, created_at=now)
    assert len(await collect(js, subject)) == 1


async def key_recorded(js: JetStreamContext) -> None:
    """The durable key is written after the PubAck without waiting; give it a moment."""
    bucket = await js.key_value(DEDUPE_KV.bucket)
    for _ in range(100):
        if [k async for k in _keys(bucket)]:
            return
        await asyncio.sleep(0.02)


async def _keys(bucket: KeyValue) -> AsyncIterator[str]:
    with contextlib.suppress(NoKeysError):
        for key in await bucket.keys():
            yield key


async def test_ids_differing_only_in_case_are_different_events(
    provisioned_nats_url: str, js: JetStreamContext
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    g = await gate(provisioned_nats_url)
    subject = subjects.chat_inbound("feishu", tenant)
    for key in ("msgAbC==", "msgabc=="):
        env = an_event(tenant, f"x:{tenant}:{key}")
        assert await g.accept(dedupe_key=f"{tenant}{key}", subject=subject, envelope=env) is (
            Outcome.PUBLISHED
        )
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
