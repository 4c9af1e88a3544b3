"""The outbox (runtime.outbox): what a handler publishes for one input carries ids derived from
the input, so a handler run again on a redelivery publishes the same ids and the bus stores its
outputs once; they keep the input's tenant, conversation and correlation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import MessageReceived, ReplyGenerated
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.devstack.testing import collect
from zhongshu.runtime import Delivery
from zhongshu.runtime.bus import Publisher
from zhongshu.runtime.outbox import Outbox

SOURCE = "zhongshu/outbox-test"


@pytest_asyncio.fixture
async def subject(nats_url: str, js: JetStreamContext) -> AsyncIterator[str]:
    """``<prefix>.in`` and ``<prefix>.out`` on a stream of this test alone."""
    name = "outbox_" + uuid.uuid4().hex[:10]  # the stream's name is its subjects' prefix
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        yield name
    finally:
        await js.delete_stream(name)


async def delivered(js: JetStreamContext, prefix: str, conversation_id: str | None) -> Msg:
    """An input stored and fetched, as the consume loop hands it to a handler."""
    event = example(MessageReceived)
    env = wire.make_envelope(
        event,
        id="evt-" + uuid.uuid4().hex,
        source="test",
        tenant="acme",
        conversation_id=conversation_id,
    )
    await js.publish(f"{prefix}.in", wire.encode(env), headers={H.MSG_ID: env.id})
    pull = await js.pull_subscribe(f"{prefix}.in", durable=None)
    [msg] = await pull.fetch(1)
    return msg


async def test_a_handler_run_twice_stores_its_outputs_once(
    js: JetStreamContext, subject: str
) -> None:
    msg = await delivered(js, subject, conversation_id="conv-1")
    inbound = wire.decode_any(msg.data)
    publisher = Publisher(js)
    for _ in range(2):  # the first run, then the run on a redelivery
        delivery = Delivery(msg, publisher, ack_wait_s=30.0)
        out = Outbox.answering(inbound, delivery, source=SOURCE)
        event = msgspec.structs.replace(example(MessageReceived), text="out")
        await out.publish(f"{subject}.out", event, out.msg_id("stage.one"))
        await out.publish(f"{subject}.out", event, out.msg_id("stage.two"))
        acks = await asyncio.gather(*delivery.pending)
    assert all(ack.duplicate for ack in acks)

    stored = await collect(js, f"{subject}.out", count=2)
    assert [m.headers[H.MSG_ID] for m in stored if m.headers] == [
        derive_msg_id(inbound.id, "stage.one"),
        derive_msg_id(inbound.id, "stage.two"),
    ]
    first = wire.decode_any(stored[0].data)
    assert first.id == derive_msg_id(inbound.id, "stage.one")
    assert (first.source, first.tenant) == (SOURCE, "acme")
    assert first.conversation_id == "conv-1"
    assert first.correlation_id == inbound.id  # the input had none: it starts the chain


async def test_publish_now_is_stored_before_it_returns(js: JetStreamContext, subject: str) -> None:
    msg = await delivered(js, subject, conversation_id=None)
    delivery = Delivery(msg, Publisher(js), ack_wait_s=30.0)
    out = Outbox(delivery, source=SOURCE, tenant="acme", correlation_id="run-1")
    await out.publish_now(f"{subject}.out", example(MessageReceived), "fixed-id")
    assert delivery.pending == []
    stored = await js.get_last_msg(subject, f"{subject}.out")
    assert stored.headers is not None
    assert stored.headers[H.MSG_ID] == "fixed-id"
    assert wire.decode_any(stored.data or b"").correlation_id == "run-1"


async def test_a_reply_goes_to_its_chat_under_the_whole_reply_id(
    provisioned_nats_url: str, js: JetStreamContext, subject: str
) -> None:
    msg = await delivered(js, subject, conversation_id=None)
    tenant = "t" + uuid.uuid4().hex[:10]
    delivery = Delivery(msg, Publisher(js), ack_wait_s=30.0)
    out = Outbox(delivery, source=SOURCE, tenant=tenant)
    reply = ReplyGenerated(
        reply_id="reply-1", platform="feishu", app="a", tenant=tenant, chat_id="c", text="hi"
    )
    await out.reply(reply)
    await out.reply(msgspec.structs.replace(reply, reply_id="reply-2"), msg_id="chosen")
    await asyncio.gather(*delivery.pending)
    stored = await collect(js, subjects.chat_reply("feishu", tenant), count=2)
    assert [m.headers[H.MSG_ID] for m in stored if m.headers] == [
        derive_msg_id("reply-1", "final"),
        "chosen",
    ]
