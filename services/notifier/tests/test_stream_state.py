"""A streaming card's state in Redis, shared by replicas: each chunk claims its sequence and the
card's turn in one step, so one update of a card is in flight at a time and the sequences reach
the platform in order."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from zhongshu.notifier.adapters.streamstate import BUSY, StreamState

FINAL = 1_000_000_000


async def test_one_update_of_a_card_is_in_flight_at_a_time_and_only_newer_chunks_follow(
    redis: Redis,
) -> None:
    state, key = StreamState(redis), uuid.uuid4().hex
    first = await state.claim(key, 1, False, 0.0, turn_s=5.0)
    assert first > 0
    # Chunk 2 while chunk 1's update is in flight: skipped (a newer one carries its text).
    assert await state.claim(key, 2, False, 0.0, turn_s=5.0) == 0
    assert await state.claim(key, FINAL, True, 0.0, turn_s=5.0) == BUSY  # the final waits
    await state.end_turn(key, first + 100)  # not the holder: changes nothing
    assert await state.claim(key, FINAL, True, 0.0, turn_s=5.0) == BUSY
    await state.end_turn(key, first)
    final = await state.claim(key, FINAL, True, 0.0, turn_s=5.0)
    assert final > first + 1  # the content update uses final - 1, closing the stream final
    await state.end_turn(key, final)
    assert await state.claim(key, 3, False, 0.0, turn_s=5.0) == 0  # older than the final


async def test_updates_are_throttled_per_card_but_the_final_always_passes(redis: Redis) -> None:
    state, key = StreamState(redis), uuid.uuid4().hex
    first = await state.claim(key, 1, False, 60.0, turn_s=5.0)
    await state.end_turn(key, first)
    assert await state.claim(key, 2, False, 60.0, turn_s=5.0) == 0  # too soon
    assert await state.claim(key, FINAL, True, 60.0, turn_s=5.0) > first


async def test_a_chunk_that_created_the_card_is_recorded_without_taking_the_turn(
    redis: Redis,
) -> None:
    state, key = StreamState(redis), uuid.uuid4().hex
    shown = await state.claim(key, 1, False, 0.0, turn_s=5.0, take_turn=False)
    assert shown > 0
    assert await state.claim(key, 1, False, 0.0, turn_s=5.0) == 0  # applied already
    assert await state.claim(key, FINAL, True, 0.0, turn_s=5.0) > shown  # nothing in flight


async def test_a_turn_whose_holder_died_is_free_again_after_its_ttl(redis: Redis) -> None:
    state, key = StreamState(redis), uuid.uuid4().hex
    assert await state.claim(key, 1, False, 0.0, turn_s=0.3) > 0  # and never ended
    assert await state.claim(key, FINAL, True, 0.0, turn_s=5.0) == BUSY
    await asyncio.sleep(0.4)
    assert await state.claim(key, FINAL, True, 0.0, turn_s=5.0) > 0
