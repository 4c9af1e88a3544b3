"""Streams partition the subject space, and their limits are deliberate."""

import itertools

import pytest

from zhongshu.contracts import streams, subjects


def test_no_two_streams_claim_the_same_subject() -> None:
    for first, second in itertools.combinations(streams.STREAMS, 2):
        for a, b in itertools.product(first.subjects, second.subjects):
            overlap = subjects.filters_overlap(a, b)
            assert not overlap, f"{first.name} {a} overlaps {second.name} {b}"


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("chat.>", "chat.inbound.>", True),
        ("chat.inbound.>", "chat.reply.>", False),
        ("a.*", "a.>", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a", False),
        ("*.b", "a.*", True),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        (">", "x.y", True),
    ],
)
def test_overlap_check_follows_nats_wildcards(first: str, second: str, expected: bool) -> None:
    assert subjects.filters_overlap(first, second) is expected
    assert subjects.filters_overlap(second, first) is expected


def test_every_stream_and_bucket_has_a_unique_name() -> None:
    names = [stream.name for stream in streams.STREAMS]
    assert len(set(names)) == len(names) == 13
    buckets = [kv.bucket for kv in streams.KV_BUCKETS]
    assert len(set(buckets)) == len(buckets)


def test_schedules_stream_is_set_up_for_message_schedules() -> None:
    spec = streams.SCHEDULES
    assert spec.allow_msg_schedules
    assert spec.max_msgs_per_subject == 1
    assert spec.max_age_s == 0, "an age limit would silently delete schedules"
    # The server refuses `discard: new` with schedules (err 10052), so the byte cap must stay
    # far above what schedules need: hitting it would discard the oldest schedules.
    assert spec.discard == "old"
    assert spec.max_bytes >= 1024**3


def test_tasks_sources_schedule_firings_as_task_requests() -> None:
    (source,) = streams.TASKS.sources
    assert source.name == streams.SCHEDULES.name
    (transform,) = source.subject_transforms
    assert transform.src == subjects.ALL_SCHEDULE_FIRINGS
    assert transform.dest == "task.requested.{{wildcard(1)}}"
    # What the transform produces is a task request in TASKS, for the firing's tenant.
    firing = subjects.schedule_fired("acme", "daily")
    renamed = "task.requested." + firing.split(".")[1]
    assert renamed == subjects.task_requested("acme")
    assert streams.stream_for_subject(renamed) is streams.TASKS


def test_limits_are_bounded_where_they_must_be() -> None:
    for spec in streams.STREAMS:
        assert spec.duplicate_window_s == 120.0
        assert spec.max_bytes > 0, f"{spec.name} needs a byte cap"
        if spec.archived and spec is not streams.SCHEDULES:
            assert spec.max_age_s >= 30 * 86400, spec.name
    assert streams.AUDIT.max_age_s > 365 * 86400
    # Telemetry lives for hours, in memory, and is never archived.
    assert streams.TRACES.storage == "memory"
    assert not streams.TRACES.archived
    assert 3600 <= streams.TRACES.max_age_s <= 6 * 3600


def test_dedupe_bucket_outlives_platform_retries() -> None:
    assert streams.DEDUPE_KV.ttl_s >= 24 * 3600
    assert streams.LEASES_KV.ttl_s == 15
    assert streams.CONFIG_KV.history == 5
    assert streams.DELIVERY_STATE_KV.ttl_s == 7 * 86400


def test_reserved_storage_stays_within_a_modest_server_budget() -> None:
    # JetStream reserves every byte cap up front; growing them silently would make
    # provisioning fail on servers with the default storage budget.
    assert streams.TOTAL_RESERVED_BYTES < 100 * 1024**3
