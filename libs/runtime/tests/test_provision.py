"""Provisioning: idempotent, applies safe changes, refuses ones that would lose events."""

from __future__ import annotations

import uuid

import msgspec
from nats.js.client import JetStreamContext

from zhongshu.contracts.streams import KV_BUCKETS, STREAMS, KeyValueSpec, StreamSpec
from zhongshu.devstack import NatsServer
from zhongshu.runtime import bus
from zhongshu.runtime.provision import Action, provision, refused


def a_stream(**changes: object) -> StreamSpec:
    name = "T" + uuid.uuid4().hex[:8].upper()
    spec = StreamSpec(
        name=name,
        subjects=(f"{name.lower()}.a.>",),
        description="test stream",
        max_age_s=3600,
        max_bytes=1024 * 1024,
    )
    return msgspec.structs.replace(spec, **changes)


async def test_provisioning_twice_changes_nothing_the_second_time(
    private_nats_server: NatsServer,
) -> None:
    client = await bus.connect(private_nats_server.url, name="test")
    js = bus.jetstream(client)
    try:
        first = await provision(js, STREAMS, KV_BUCKETS)
        assert {o.action for o in first} == {Action.CREATED}
        assert len(first) == len(STREAMS) + len(KV_BUCKETS)
        second = await provision(js, STREAMS, KV_BUCKETS)
        assert [o.action for o in second] == [Action.UNCHANGED] * len(second)
        schedules = await js.stream_info("SCHEDULES")
        assert schedules.config.allow_msg_schedules
    finally:
        await client.close()


async def test_a_longer_retention_is_applied(js: JetStreamContext) -> None:
    spec = a_stream()
    await provision(js, [spec])
    longer = msgspec.structs.replace(spec, max_age_s=7200, subjects=(*spec.subjects, "x.y.>"))
    [outcome] = await provision(js, [longer])
    assert outcome.action is Action.UPDATED
    info = await js.stream_info(spec.name)
    assert info.config.max_age == 7200
    assert set(info.config.subjects or []) == {*spec.subjects, "x.y.>"}


async def test_a_change_that_would_drop_events_is_refused_and_explained(
    js: JetStreamContext,
) -> None:
    spec = a_stream()
    await provision(js, [spec])
    shrunk = msgspec.structs.replace(spec, max_age_s=60, subjects=("other.>",))
    outcomes = await provision(js, [shrunk])
    [outcome] = refused(outcomes)
    assert "max_age would shrink" in outcome.detail
    assert "would be removed" in outcome.detail
    info = await js.stream_info(spec.name)
    assert info.config.max_age == 3600  # nothing was applied
    assert list(info.config.subjects or []) == list(spec.subjects)


async def test_data_loss_can_be_allowed_explicitly(js: JetStreamContext) -> None:
    spec = a_stream()
    await provision(js, [spec])
    [outcome] = await provision(
        js, [msgspec.structs.replace(spec, max_age_s=60)], allow_data_loss=True
    )
    assert outcome.action is Action.UPDATED
    assert (await js.stream_info(spec.name)).config.max_age == 60


async def test_a_bucket_ttl_that_would_expire_keys_early_is_refused(js: JetStreamContext) -> None:
    bucket = KeyValueSpec(bucket="b" + uuid.uuid4().hex[:8], description="test", ttl_s=3600)
    [created] = await provision(js, [], [bucket])
    assert created.action is Action.CREATED
    [again] = await provision(js, [], [bucket])
    assert again.action is Action.UNCHANGED
    [shorter] = await provision(js, [], [msgspec.structs.replace(bucket, ttl_s=60)])
    assert shorter.action is Action.REFUSED
