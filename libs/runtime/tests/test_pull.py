"""The consume loop's pull primitive (runtime.pull): against a real JetStream consumer, and
against a scripted consumer answering the pull requests itself, for the status messages and
orderings a real server produces only under faults."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from zhongshu.devstack.nats import NatsServer
from zhongshu.devstack.testing import eventually
from zhongshu.runtime.pull import Puller

# A bound for a hung test, not a timing assertion.
HANG_S = 10.0


def unique() -> str:
    return "P" + uuid.uuid4().hex[:10].upper()


@pytest_asyncio.fixture
async def stream(js: JetStreamContext) -> AsyncIterator[str]:
    """A stream of this test alone with a durable pull consumer ``d`` on it."""
    name = unique()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    await js.add_consumer(name, ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
    try:
        yield name
    finally:
        await js.delete_stream(name)


async def publish(js: JetStreamContext, stream: str, count: int) -> None:
    for i in range(count):
        await js.publish(f"{stream}.x", str(i).encode())


async def fetched(
    puller: Puller,
    batch: int,
    expires_s: float,
    *,
    no_wait: bool = False,
    heartbeat: float | None = None,
) -> list[Msg]:
    fetch = puller.fetch(batch, expires_s, no_wait=no_wait, heartbeat=heartbeat)
    return await asyncio.wait_for(fetch, HANG_S)


# The scripted consumer's requests go under a prefix of their own: under ``$JS.API`` the
# server's JetStream would answer them too (no such stream), racing the script's answers.
SCRIPTED_API = "scripted.API"


class ScriptedConsumer:
    """Receives the pull requests for ``<stream>.d`` and lets the test answer them."""

    def __init__(self, nc: Client, stream: str) -> None:
        self.nc, self.stream = nc, stream
        self.requests: asyncio.Queue[Msg] = asyncio.Queue()

    async def start(self) -> None:
        await self.nc.subscribe(
            f"{SCRIPTED_API}.CONSUMER.MSG.NEXT.{self.stream}.d", cb=self.requests.put
        )
        await self.nc.flush()

    async def request(self) -> Msg:
        return await asyncio.wait_for(self.requests.get(), HANG_S)

    async def deliver(self, reply: str, data: bytes, seq: int = 1) -> None:
        ack = f"scripted.ack.{self.stream}.{seq}"  # any reply subject marks a stream message
        await self.nc.publish(reply, data, reply=ack)
        await self.nc.flush()

    async def status(self, reply: str, code: str, description: str) -> None:
        await self.nc.publish(reply, b"", headers={"Status": code, "Description": description})
        await self.nc.flush()


@pytest_asyncio.fixture
async def puller_conn(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, name="pytest-puller")
    try:
        yield client
    finally:
        await client.close()


async def scripted(nc: Client, puller_conn: Client) -> tuple[ScriptedConsumer, Puller]:
    stream = unique()
    consumer = ScriptedConsumer(nc, stream)
    await consumer.start()
    puller = Puller(puller_conn, stream, "d", api_prefix=SCRIPTED_API)
    await puller.subscribe()
    return consumer, puller


# ---------------------------------------------------------------- a real consumer


async def test_no_wait_fetch_returns_what_is_stored_without_waiting_for_expiry(
    js: JetStreamContext, puller_conn: Client, stream: str
) -> None:
    await publish(js, stream, 3)
    puller = Puller(puller_conn, stream, "d")
    await puller.subscribe()
    # Expiry far beyond the hang bound: only the server's 404 can end this fetch in time.
    msgs = await fetched(puller, 10, 60.0, no_wait=True)
    assert [m.data for m in msgs] == [b"0", b"1", b"2"]
    await asyncio.gather(*(m.ack() for m in msgs))
    assert msgs[0].metadata.sequence.stream == 1


async def test_lingering_fetch_wakes_on_the_first_message_stored(
    js: JetStreamContext, puller_conn: Client, stream: str
) -> None:
    puller = Puller(puller_conn, stream, "d")
    await puller.subscribe()
    fetch = asyncio.create_task(fetched(puller, 1, 60.0))
    await asyncio.sleep(0.05)
    await publish(js, stream, 1)
    msgs = await fetch
    assert [m.data for m in msgs] == [b"0"]


async def test_a_full_batch_ends_the_fetch_and_the_rest_stays_on_the_server(
    js: JetStreamContext, puller_conn: Client, stream: str
) -> None:
    await publish(js, stream, 5)
    puller = Puller(puller_conn, stream, "d")
    await puller.subscribe()
    first = await fetched(puller, 2, 60.0, no_wait=True)
    rest = await fetched(puller, 10, 60.0, no_wait=True)
    assert [m.data for m in first + rest] == [b"0", b"1", b"2", b"3", b"4"]


async def test_an_expired_pull_with_nothing_stored_is_a_timeout(
    puller_conn: Client, stream: str
) -> None:
    puller = Puller(puller_conn, stream, "d")
    await puller.subscribe()
    with pytest.raises(nats.errors.TimeoutError):
        await fetched(puller, 10, 0.05, no_wait=True)
    with pytest.raises(nats.errors.TimeoutError):
        await fetched(puller, 1, 0.05)


async def test_a_409_from_the_server_is_a_timeout_as_in_nats_py(
    js: JetStreamContext, puller_conn: Client, stream: str
) -> None:
    config = ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, max_waiting=1)
    await js.add_consumer(stream, config)
    waiting, refused = Puller(puller_conn, stream, "w"), Puller(puller_conn, stream, "w")
    await waiting.subscribe()
    await refused.subscribe()
    first = asyncio.create_task(fetched(waiting, 1, 60.0))
    await asyncio.sleep(0.05)
    # One request may wait on this consumer: the server refuses a second with 409.
    with pytest.raises(nats.errors.TimeoutError):
        await fetched(refused, 1, 60.0)
    await publish(js, stream, 1)
    assert [m.data for m in await first] == [b"0"]


async def test_many_pulls_keep_one_subscription(puller_conn: Client, stream: str) -> None:
    puller = Puller(puller_conn, stream, "d")
    await puller.subscribe()
    subscriptions = len(puller_conn._subs)
    for _ in range(100):
        with pytest.raises(nats.errors.TimeoutError):
            await fetched(puller, 10, 0.005, no_wait=True)
    assert len(puller_conn._subs) == subscriptions
    await puller.close()
    assert len(puller_conn._subs) == subscriptions - 1


# ---------------------------------------------------------------- scripted answers


async def test_messages_then_404_end_the_fetch(nc: Client, puller_conn: Client) -> None:
    consumer, puller = await scripted(nc, puller_conn)
    fetch = asyncio.create_task(fetched(puller, 10, 60.0, no_wait=True))
    request = await consumer.request()
    await consumer.deliver(request.reply, b"a", 1)
    await consumer.deliver(request.reply, b"b", 2)
    await consumer.status(request.reply, "404", "No Messages")
    assert [m.data for m in await fetch] == [b"a", b"b"]


async def test_heartbeats_do_not_end_a_fetch(nc: Client, puller_conn: Client) -> None:
    consumer, puller = await scripted(nc, puller_conn)
    fetch = asyncio.create_task(fetched(puller, 1, 60.0, heartbeat=5.0))
    request = await consumer.request()
    assert b'"idle_heartbeat":5000000000' in request.data
    await consumer.status(request.reply, "100", "Idle Heartbeat")
    await consumer.deliver(request.reply, b"a")
    assert [m.data for m in await fetch] == [b"a"]


async def test_an_unexpected_status_is_an_api_error(nc: Client, puller_conn: Client) -> None:
    consumer, puller = await scripted(nc, puller_conn)
    fetch = asyncio.create_task(fetched(puller, 1, 60.0))
    request = await consumer.request()
    await consumer.status(request.reply, "400", "Bad Request")
    with pytest.raises(APIError):
        await fetch


async def test_a_late_status_of_an_earlier_pull_does_not_end_the_next_one(
    nc: Client, puller_conn: Client
) -> None:
    consumer, puller = await scripted(nc, puller_conn)
    with pytest.raises(nats.errors.TimeoutError):  # unanswered: the client gives up on it
        await fetched(puller, 1, 0.01)
    earlier = await consumer.request()
    fetch = asyncio.create_task(fetched(puller, 1, 60.0))
    request = await consumer.request()
    assert request.reply != earlier.reply
    await consumer.status(earlier.reply, "408", "Request Timeout")
    await consumer.deliver(request.reply, b"a")
    assert [m.data for m in await fetch] == [b"a"]


async def test_a_message_delivered_after_its_pull_expired_is_returned_by_the_next_fetch(
    nc: Client, puller_conn: Client
) -> None:
    consumer, puller = await scripted(nc, puller_conn)
    with pytest.raises(nats.errors.TimeoutError):
        await fetched(puller, 1, 0.01)
    expired = await consumer.request()
    await consumer.deliver(expired.reply, b"late")
    await eventually(lambda: puller.held == 1, "the late message to reach the inbox")
    assert [m.data for m in await fetched(puller, 10, 60.0, no_wait=True)] == [b"late"]
    assert consumer.requests.empty(), "held messages are returned without a new request"


async def test_close_hands_back_messages_no_fetch_took(nc: Client, puller_conn: Client) -> None:
    consumer, puller = await scripted(nc, puller_conn)
    with pytest.raises(nats.errors.TimeoutError):
        await fetched(puller, 2, 0.01)
    expired = await consumer.request()
    await consumer.deliver(expired.reply, b"a", 1)
    await consumer.deliver(expired.reply, b"b", 2)
    await eventually(lambda: puller.held == 2, "the late messages to reach the inbox")
    assert [m.data for m in await puller.close()] == [b"a", b"b"]


# ---------------------------------------------------------------- a server restart


async def test_a_server_restart_mid_pull_does_not_strand_the_puller(
    private_nats_server: NatsServer,
) -> None:
    client = await nats.connect(
        private_nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    js = client.jetstream()
    try:
        await js.add_stream(name="R", subjects=["R.>"])
        await js.add_consumer("R", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
        puller = Puller(client, "R", "d")
        await puller.subscribe()
        pulling = asyncio.create_task(puller.fetch(1, 1.0))
        await asyncio.sleep(0.1)  # the lingering request is on the server
        await asyncio.to_thread(private_nats_server.restart)
        with pytest.raises(nats.errors.TimeoutError):
            await asyncio.wait_for(pulling, HANG_S)  # its request died with the server

        async def stored() -> bool:
            try:
                await js.publish("R.x", b"after", timeout=1)
                return True
            except (nats.errors.Error, TimeoutError):
                return False

        async def fetched_again() -> list[Msg]:
            # Fetch again as the consume loop does, until the reconnected inbox gets it.
            try:
                return await puller.fetch(1, 0.5)
            except (nats.errors.Error, TimeoutError):
                return []

        await eventually(stored, "a publish after the restart", HANG_S)
        msgs = await eventually(fetched_again, "a fetch after the restart", HANG_S)
        assert msgs[0].data == b"after"
    finally:
        await client.close()
