"""Background work that must stop when the service stops (the lag gauges, schedule
reconciliation, pruning, the KV watches, the writers).

Cancellation alone is not enough: ``asyncio.wait_for`` in Python 3.11, which asyncpg and nats-py
use for their timeouts, can swallow a cancellation that arrives as the awaited call completes,
and a loop that lost its cancellation runs on while its owner waits for it forever. So loops
also watch a stop flag, and owners wait for them a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("zhongshu.projector.jobs")

STOP_TIMEOUT_S = 10.0


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it, at most ``STOP_TIMEOUT_S``."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    if not done:
        log.warning("%s did not stop within %.0fs; left behind", task.get_name(), STOP_TIMEOUT_S)


class Periodic:
    """Runs ``job()`` now and then every ``interval_s`` until stopped; a failed run is logged
    and the next one comes at its time."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._interval_s = interval_s
        self._job = job
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        await stop_task(self._task)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._job()
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return
                raise
            except Exception as exc:
                log.warning("%s failed: %r", self.name, exc)
            with contextlib.suppress(TimeoutError):  # the interval passed without a stop
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
