"""The per-reply lock of a notifier process: the chunks of one reply one at a time, a
non-final one skipped while its reply is busy, nothing kept once nobody holds a key."""

from __future__ import annotations

import asyncio

from zhongshu.notifier.keyedlocks import KeyedLocks


async def test_a_key_is_held_by_one_task_at_a_time_and_forgotten_when_free() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("r1") as held:
            assert held
            order.append("first in")
            await release.wait()
            order.append("first out")

    async def final() -> None:
        async with locks.hold("r1") as held:
            assert held
            order.append("final")

    tasks = [asyncio.create_task(first())]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(final()))
    await asyncio.sleep(0)
    async with locks.hold("r1", wait=False) as held:
        assert not held  # a non-final chunk finds its reply busy: skipped
    async with locks.hold("r2", wait=False) as held:
        assert held  # another reply is not held up
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "final"]
    assert len(locks) == 0


async def test_a_holder_sees_a_waiting_final_and_leaves_it_a_note() -> None:
    # The chunk showing the card leaves the card's record to the final chunk waiting for it.
    locks = KeyedLocks()
    shown = asyncio.Event()
    notes: list[object] = []

    async def first() -> None:
        async with locks.hold("r1") as held:
            assert held is not None
            assert not held.awaited
            await shown.wait()
            assert held.awaited  # the final came meanwhile
            held.memo = "card record"

    async def final() -> None:
        async with locks.hold("r1") as held:
            assert held is not None
            notes.append(held.memo)

    task = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(final())
    await asyncio.sleep(0)
    shown.set()
    await asyncio.gather(task, waiting)
    assert notes == ["card record"]
    assert len(locks) == 0
