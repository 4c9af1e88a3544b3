"""Cancellation that holds: the check for polling loops and the bounded stop of a background task.

redis-py (8.1) can absorb a task's cancellation that arrives while a command or script waits for
its connection or reply, and return the result as if nothing happened; ``asyncio.wait_for`` in
Python 3.11, which asyncpg and nats-py use for their timeouts, can do the same when the
cancellation arrives as the awaited call completes. A loop that polls (a lock, a rate-limit slot)
would then run on until its condition comes true by itself: the inference cache's deadline test
waited out a 60 s lock that way. Such loops call :func:`raise_if_cancelled` after each call; loops
that run until stopped also watch a stop flag (``Periodic``, ``WatchedBucket``), and their owners
wait for them a bounded time (:func:`stop_task`)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("zhongshu.runtime.cancellation")

STOP_TIMEOUT_S = 10.0


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task has a cancellation pending that an
    awaited library call swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[None] | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel ``task`` and wait for it, at most ``timeout_s`` (a task that lost its cancellation
    and does not watch a stop flag is left behind, with a warning, rather than waited for)."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("%s did not stop within %.0fs; left behind", task.get_name(), timeout_s)
