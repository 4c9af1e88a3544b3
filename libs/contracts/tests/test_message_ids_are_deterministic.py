"""Derived ids repeat for a redelivered input, differ for different inputs, and stay bounded."""

import itertools
import re
import time

import pytest

from zhongshu.contracts.ids import (
    MAX_READABLE_ID_LENGTH,
    derive_msg_id,
    new_event_id,
    schedule_fire_id,
)


def test_same_parent_and_stage_give_the_same_id() -> None:
    assert derive_msg_id("evt-1", "router") == derive_msg_id("evt-1", "router")


def test_short_ids_stay_readable() -> None:
    assert derive_msg_id("evt-1", "router") == "evt-1:router"
    chained = derive_msg_id(derive_msg_id("evt-1", "router"), "reply.final")
    assert chained == "evt-1:router:reply.final"


def test_different_inputs_give_different_ids() -> None:
    parents = ["evt-1", "evt-2", "evt-1:router", "a:b", "a", "x" * 200, "msgX+/=="]
    stages = ["router", "chunk.1", "chunk.10", "b:c", "reply.final", "y" * 200, "with space"]
    ids = {derive_msg_id(p, s) for p, s in itertools.product(parents, stages)}
    assert len(ids) == len(parents) * len(stages)


def test_ambiguous_splits_do_not_collide() -> None:
    assert derive_msg_id("a:b", "c") != derive_msg_id("a", "b:c")


@pytest.mark.parametrize(
    ("parent", "stage"),
    [("p" * 500, "router"), ("evt", "s" * 500), ("evt\r\nInjected: 1", "router"), ("飞书", "x")],
)
def test_long_or_unsafe_ids_are_hashed_and_bounded(parent: str, stage: str) -> None:
    derived = derive_msg_id(parent, stage)
    assert re.fullmatch(r"[0-9a-f]{40}", derived)
    assert derived == derive_msg_id(parent, stage)


def test_ids_are_never_longer_than_the_readable_limit() -> None:
    for length in range(1, 300, 7):
        assert len(derive_msg_id("e" * length, "chunk.3")) <= MAX_READABLE_ID_LENGTH


def test_empty_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        derive_msg_id("evt", "")
    with pytest.raises(ValueError, match="must not be empty"):
        derive_msg_id("", "router")


def test_each_schedule_firing_gets_its_own_stable_id() -> None:
    first = schedule_fire_id("task-1", "2025-03-21T09:00:00Z")
    again = schedule_fire_id("task-1", "2025-03-21T09:00:00Z")
    second = schedule_fire_id("task-1", "2025-03-22T09:00:00Z")
    assert first == again == "task-1:fire.20250321T090000Z"
    assert first != second
    assert schedule_fire_id("task-1", "purge") == "task-1:fire.purge"


def test_new_event_ids_are_unique_time_ordered_uuid7() -> None:
    ids = []
    for _ in range(3):
        ids.append(new_event_id())
        time.sleep(0.002)
    assert len(set(ids)) == 3
    assert ids == sorted(ids)
    for value in ids:
        assert re.fullmatch(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", value), value
    assert len({new_event_id() for _ in range(10_000)}) == 10_000
