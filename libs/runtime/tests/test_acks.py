"""PubAcks awaited through one inbox (runtime.acks): the same answers and the same errors as
nats-py's ``js.publish``, on a real JetStream."""

from __future__ import annotations

import asyncio
import uuid

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from zhongshu.runtime.acks import AckInbox
from zhongshu.runtime.once import WRONG_LAST_SEQUENCE


async def a_stream(js: JetStreamContext) -> str:
    name = "ACKS_" + uuid.uuid4().hex[:10]
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    return name.lower()


async def test_concurrent_publishes_get_their_own_pubacks(
    nc: NatsClient, js: JetStreamContext
) -> None:
    prefix = await a_stream(js)
    inbox = AckInbox(nc, max_pending=8)  # far fewer than the publishes: they wait for room
    futures = [
        await inbox.publish(f"{prefix}.m", str(i).encode(), headers={"Nats-Msg-Id": f"m{i}"})
        for i in range(200)
    ]
    acks = await asyncio.gather(*futures)
    assert sorted(a.seq for a in acks) == list(range(1, 201))
    assert inbox.pending == 0
    again = await (await inbox.publish(f"{prefix}.m", b"x", headers={"Nats-Msg-Id": "m7"}))
    assert again.duplicate
    assert again.seq == 8


async def test_a_subject_no_stream_stores_fails_like_nats_py(nc: NatsClient) -> None:
    inbox = AckInbox(nc)
    with pytest.raises(NoStreamResponseError):
        await (await inbox.publish(f"nowhere.{uuid.uuid4().hex}", b"x", timeout_s=5))


async def test_a_failed_expectation_is_the_servers_api_error(
    nc: NatsClient, js: JetStreamContext
) -> None:
    prefix = await a_stream(js)
    inbox = AckInbox(nc)
    expect_new = {"Nats-Expected-Last-Subject-Sequence": "0"}
    await (await inbox.publish(f"{prefix}.k", b"1", headers=expect_new))
    with pytest.raises(APIError) as raised:
        await (await inbox.publish(f"{prefix}.k", b"2", headers=expect_new))
    assert raised.value.err_code == WRONG_LAST_SEQUENCE


async def test_an_unanswered_publish_times_out(nc: NatsClient) -> None:
    subject = f"silent.{uuid.uuid4().hex}"
    listener = await nc.subscribe(subject)  # someone listens, nobody answers
    inbox = AckInbox(nc)
    with pytest.raises(nats.errors.TimeoutError):
        await (await inbox.publish(subject, b"x", timeout_s=0.2))
    assert inbox.pending == 0
    await listener.unsubscribe()


async def test_closing_fails_what_still_waits(nc: NatsClient) -> None:
    subject = f"silent.{uuid.uuid4().hex}"
    listener = await nc.subscribe(subject)
    inbox = AckInbox(nc)
    future = await inbox.publish(subject, b"x")
    await inbox.close()
    with pytest.raises(nats.errors.TimeoutError):
        await future
    await listener.unsubscribe()
