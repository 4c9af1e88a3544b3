"""Periodic work (runtime.periodic): it runs now and again, outlives a failed run, and a stop
ends it promptly, in the middle of a run, between runs, or when a library swallowed the
cancellation; nothing runs after the stop."""

from __future__ import annotations

import asyncio
import contextlib

from zhongshu.devstack.testing import eventually
from zhongshu.runtime.periodic import Periodic


async def test_it_runs_now_and_again() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))

    async with Periodic("count", 0.001, job):
        await eventually(lambda: len(runs) >= 3, "three runs")


async def test_a_failed_run_is_followed_by_the_next() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    async with Periodic("flaky", 0.001, job) as periodic:
        await eventually(lambda: len(runs) >= 2, "a run after the failure")
        assert periodic.running


async def test_with_wait_first_the_first_run_comes_after_an_interval() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    periodic = Periodic("later", 3600, job, wait_first=True)
    periodic.start()
    await asyncio.sleep(0)
    await periodic.stop()
    assert runs == []
    assert not periodic.running


async def test_the_interval_may_change_between_runs() -> None:
    intervals = iter([0.001, 0.001, 3600.0])
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    async with Periodic("paced", lambda: next(intervals), job):
        await eventually(lambda: len(runs) == 3, "three runs")
    assert len(runs) == 3


async def test_a_stop_ends_a_run_in_progress() -> None:
    started = asyncio.Event()
    finished: list[bool] = []

    async def job() -> None:
        started.set()
        await asyncio.Event().wait()  # never set
        finished.append(True)

    periodic = Periodic("stuck", 0.001, job)
    periodic.start()
    await started.wait()
    await periodic.stop()
    assert not periodic.running
    assert finished == []


async def test_a_stop_holds_when_the_job_swallows_the_cancellation() -> None:
    started = asyncio.Event()
    runs: list[int] = []

    async def job() -> None:  # what redis-py and wait_for can do (runtime.cancellation)
        runs.append(1)
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    periodic = Periodic("deaf", 0.001, job)
    periodic.start()
    await started.wait()
    await periodic.stop()
    assert not periodic.running
    assert runs == [1]


async def test_nothing_runs_after_the_stop() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    periodic = Periodic("brief", 0.001, job)
    periodic.start()
    await eventually(lambda: runs, "a run")
    await periodic.stop()
    after_stop = len(runs)
    for _ in range(10):
        await asyncio.sleep(0.002)  # longer than the interval
    assert len(runs) == after_stop
    assert not periodic.running
