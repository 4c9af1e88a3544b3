"""Work done every so often until stopped: lag gauges, schedule reconciliation, pruning, the
heartbeats that keep a long message alive.

A stop sets a flag and cancels; the loop ends at the flag even when a library call swallowed the
cancellation (see :mod:`zhongshu.runtime.cancellation`), and the wait between runs ends at the
stop, not at the interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from zhongshu.runtime.cancellation import stop_task

log = logging.getLogger("zhongshu.runtime.periodic")


class Periodic:
    """Runs ``job()`` now (or, with ``wait_first``, after one interval) and then every
    ``interval_s`` until stopped; a failed run is logged and the next one comes at its time.

    ``interval_s`` may be a callable, read before each wait (an interval the other side sets).
    ``start()``/``stop()``, or ``async with`` for work that lasts as long as a block."""

    def __init__(
        self,
        name: str,
        interval_s: float | Callable[[], float],
        job: Callable[[], Awaitable[object]],
        *,
        wait_first: bool = False,
    ) -> None:
        self.name = name
        self._interval_s = interval_s
        self._job = job
        self._wait_first = wait_first
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` is called: a long job checks it after a call that may have
        swallowed the cancellation."""
        return self._stopping.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """End the loop, a run in progress included; no run starts after this returns."""
        self._stopping.set()
        await stop_task(self._task)

    async def __aenter__(self) -> Periodic:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _interval(self) -> float:
        return self._interval_s() if callable(self._interval_s) else self._interval_s

    async def _run(self) -> None:
        if self._wait_first and await self._stopped_within(self._interval()):
            return
        while not self._stopping.is_set():
            try:
                await self._job()
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return
                raise
            except Exception as exc:
                log.warning("%s failed: %r", self.name, exc)
            if await self._stopped_within(self._interval()):
                return

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds`` or until stopped; True when stopped."""
        try:
            with contextlib.suppress(TimeoutError):  # the interval passed without a stop
                await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.CancelledError:
            if self._stopping.is_set():
                return True
            raise
        return self._stopping.is_set()
