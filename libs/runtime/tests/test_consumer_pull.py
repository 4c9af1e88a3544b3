"""The consume loop and messages that reach its inbox outside its own fetches (a pull it gave up
on that delivered after all): handled while it runs, handed back when it stops."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from zhongshu.devstack.testing import eventually
from zhongshu.runtime import Delivery
from zhongshu.runtime.bus import Publisher
from zhongshu.runtime.consumer import ConsumerLoop, ConsumerSpec

DURABLE = "loop"


@pytest_asyncio.fixture
async def stream(js: JetStreamContext) -> AsyncIterator[str]:
    name = "L" + uuid.uuid4().hex[:10].upper()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        yield name
    finally:
        await js.delete_stream(name)


async def bound_loop(
    nc: Client, js: JetStreamContext, stream: str, handled: list[bytes]
) -> ConsumerLoop[bytes]:
    async def handle(data: bytes, delivery: Delivery) -> None:
        handled.append(data)

    spec = ConsumerSpec(
        stream=stream, durable=DURABLE, subjects=(f"{stream}.>",), handler=handle, decode=bytes
    )
    loop = ConsumerLoop(spec, service="test", js=js, publisher=Publisher.on(nc, js))
    await loop.bind()
    return loop


async def deliver_outside_a_fetch(nc: Client, stream: str, loop: ConsumerLoop[bytes]) -> None:
    """A pull the loop did not wait for, answered into its inbox: what a pull the loop gave up on
    looks like when the server delivers after all."""
    puller = loop._puller
    assert puller is not None
    await nc.publish(
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{DURABLE}",
        # Lingering, not no_wait: a loaded server may not have signalled the consumer about
        # the message just stored, and a no_wait pull would answer 404 instead of waiting.
        b'{"batch":1,"expires":5000000000}',
        reply=f"{puller._inbox}.stray",
    )
    await eventually(lambda: puller.held == 1, "the message to reach the loop's inbox")


async def test_a_message_delivered_between_fetches_is_handled_by_the_next_one(
    nc: Client, js: JetStreamContext, stream: str
) -> None:
    handled: list[bytes] = []
    loop = await bound_loop(nc, js, stream, handled)
    await js.publish(f"{stream}.x", b"late")
    await deliver_outside_a_fetch(nc, stream, loop)
    loop.start()
    try:
        await eventually(lambda: handled == [b"late"], "the late message to be handled")
    finally:
        await loop.stop(10)

    async def acked() -> bool:
        info = await js.consumer_info(stream, DURABLE)
        return not info.num_ack_pending and not info.num_pending

    await eventually(acked, "the late message to be acked")


async def test_a_message_no_fetch_took_is_handed_back_at_stop(
    nc: Client, js: JetStreamContext, stream: str
) -> None:
    handled: list[bytes] = []
    loop = await bound_loop(nc, js, stream, handled)
    await js.publish(f"{stream}.x", b"late")
    await deliver_outside_a_fetch(nc, stream, loop)
    await loop.stop(10)
    assert handled == []

    # Nak'ed, so redelivered at once (the consumer's ack_wait is 30 s: a message left to it
    # would not come back within the fetch's bound).
    again = await js.pull_subscribe_bind(DURABLE, stream)
    msgs = await again.fetch(1, timeout=5)
    assert msgs[0].data == b"late"
    assert msgs[0].metadata.num_delivered == 2
