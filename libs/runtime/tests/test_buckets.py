"""A watched KV bucket (runtime.buckets): the stored values first, then every change, held in
memory; ready once the first read is complete; a broken watch is started again; a stop ends it
whatever it is waiting for."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
import pytest_asyncio
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.devstack.testing import eventually
from zhongshu.runtime.buckets import WatchedBucket


class Rule(msgspec.Struct):
    name: str
    limit: int


decode_rule = msgspec.json.Decoder(Rule).decode


def rule(name: str, limit: int) -> bytes:
    return msgspec.json.encode(Rule(name, limit))


def a_bucket_name() -> str:
    return "watched_" + uuid.uuid4().hex[:10]


@pytest_asyncio.fixture
async def bucket_name(nats_url: str, js: JetStreamContext) -> AsyncIterator[str]:
    """A bucket of this test alone (with history, so a key's creation can be replayed)."""
    name = a_bucket_name()
    await js.create_key_value(bucket=name, history=5)
    try:
        yield name
    finally:
        await js.delete_key_value(name)


@pytest_asyncio.fixture
async def bucket(js: JetStreamContext, bucket_name: str) -> KeyValue:
    return await js.key_value(bucket_name)


async def test_the_stored_values_come_first_then_updates_and_deletes(
    js: JetStreamContext, bucket: KeyValue, bucket_name: str
) -> None:
    await bucket.put("a", rule("a", 1))
    await bucket.put("b", rule("b", 2))
    watched = WatchedBucket(js, bucket_name, decode_rule, restart_delay_s=0.01)
    watched.start()
    try:
        await watched.ready.wait()
        assert watched.get("a") == Rule("a", 1)
        assert sorted(r.name for r in watched.values()) == ["a", "b"]

        changed = await bucket.put("a", rule("a", 10))
        await eventually(lambda: watched.revision >= changed, "the update")
        assert watched.get("a") == Rule("a", 10)

        await bucket.delete("b")
        await eventually(lambda: "b" not in watched, "the delete")
        assert watched.get("b") is None
        assert len(watched) == 1
    finally:
        await watched.stop()


async def test_an_empty_bucket_is_ready_at_once_and_fills_later(
    js: JetStreamContext, bucket: KeyValue, bucket_name: str
) -> None:
    async with WatchedBucket(js, bucket_name, decode_rule) as watched:
        assert watched.ready.is_set()
        assert len(watched) == 0
        revision = await bucket.put("a", rule("a", 1))
        await eventually(lambda: watched.revision >= revision, "the first key")
        assert watched.values() == [Rule("a", 1)]


async def test_a_value_that_does_not_decode_is_left_out_and_the_rest_is_read(
    js: JetStreamContext, bucket: KeyValue, bucket_name: str
) -> None:
    await bucket.put("good", rule("good", 1))
    await bucket.put("bad", b'{"name": "bad"}')  # no limit
    async with WatchedBucket(js, bucket_name, decode_rule) as watched:
        assert watched.values() == [Rule("good", 1)]
        revision = await bucket.put("good", b"not json")
        await eventually(lambda: watched.revision >= revision, "the broken update")
        assert watched.get("good") is None  # a value it cannot read is not a value


async def test_a_key_keeps_its_creation_time_across_updates_until_it_is_deleted(
    js: JetStreamContext, bucket: KeyValue, bucket_name: str
) -> None:
    await bucket.put("a", rule("a", 1))
    await bucket.put("a", rule("a", 2))
    async with WatchedBucket(js, bucket_name, decode_rule, include_history=True) as watched:
        first, latest = await bucket.history("a")
        held = watched.held("a")
        assert held is not None
        assert held.value == Rule("a", 2)
        assert held.created_at == first.created
        assert held.written_at == latest.created

        await bucket.delete("a")
        again = await bucket.put("a", rule("a", 3))
        await eventually(lambda: watched.revision >= again, "the key created again")
        recreated = watched.held("a")
        assert recreated is not None
        assert recreated.created_at == recreated.written_at
        assert recreated.created_at == (await bucket.history("a"))[-1].created


async def test_it_waits_for_a_bucket_that_does_not_exist_yet(js: JetStreamContext) -> None:
    name = a_bucket_name()
    watched = WatchedBucket(js, name, decode_rule, restart_delay_s=0.01, max_restart_delay_s=0.05)
    watched.start()
    try:
        await asyncio.sleep(0)
        assert not watched.ready.is_set()
        kv = await js.create_key_value(bucket=name)
        try:
            await kv.put("a", rule("a", 1))
            await eventually(lambda: watched.get("a") is not None, "the bucket to be read")
            assert watched.ready.is_set()
        finally:
            await js.delete_key_value(name)
    finally:
        await watched.stop()


async def test_a_failed_watch_is_started_again_and_reads_the_bucket_afresh(
    js: JetStreamContext, bucket: KeyValue, bucket_name: str
) -> None:
    await bucket.put("a", rule("a", 1))
    await bucket.put("b", rule("b", 2))
    seen: list[str] = []
    fail_once = asyncio.Event()

    async def on_entry(entry: KeyValue.Entry, value: Rule | None) -> None:
        seen.append(entry.key)
        if fail_once.is_set():
            fail_once.clear()
            raise RuntimeError("the consumer of the watch broke")

    watched = WatchedBucket(js, bucket_name, decode_rule, on_entry=on_entry, restart_delay_s=0.01)
    async with watched:
        assert seen == ["a", "b"]
        fail_once.set()
        await bucket.delete("b")  # the entry that breaks the watch
        # The new watch replays what is stored, the delete included.
        await eventually(lambda: seen[-2:] == ["a", "b"] and len(seen) >= 5, "the replay")
        assert watched.values() == [Rule("a", 1)]
        revision = await bucket.put("c", rule("c", 3))
        await eventually(lambda: watched.revision >= revision, "a change after the restart")
        assert sorted(r.name for r in watched.values()) == ["a", "c"]


async def test_it_stops_while_waiting_for_changes(js: JetStreamContext, bucket_name: str) -> None:
    watched = WatchedBucket(js, bucket_name, decode_rule)
    watched.start()
    await watched.ready.wait()
    await watched.stop()
    assert not watched.running


async def test_it_stops_while_waiting_to_watch_again(
    js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    watched = WatchedBucket(js, a_bucket_name(), decode_rule, restart_delay_s=3600)
    with caplog.at_level(logging.WARNING, logger="zhongshu.runtime.buckets"):
        watched.start()
        await eventually(  # the first attempt fails: the bucket does not exist
            lambda: any("interrupted" in r.getMessage() for r in caplog.records), "a failure"
        )
    await watched.stop()
    assert not watched.running


async def test_it_stops_while_its_consumer_is_busy(
    js: JetStreamContext, bucket: KeyValue, bucket_name: str
) -> None:
    busy = asyncio.Event()

    async def on_entry(entry: KeyValue.Entry, value: Rule | None) -> None:
        busy.set()
        await asyncio.Event().wait()  # never set

    await bucket.put("a", rule("a", 1))
    watched = WatchedBucket(js, bucket_name, decode_rule, on_entry=on_entry)
    watched.start()
    await busy.wait()
    await watched.stop()
    assert not watched.running
    assert not watched.ready.is_set()


def test_it_takes_one_decoder() -> None:
    with pytest.raises(ValueError, match="not both"):
        WatchedBucket(
            None,  # type: ignore[arg-type]
            "b",
            decode_rule,
            decode_entry=lambda entry: decode_rule(entry.value or b""),
        )
