"""A check for polling loops that call Redis: redis-py (8.1) can absorb a task's cancellation
that arrives while a command or script waits for its connection or reply, and return the result
as if nothing happened. A loop that polls (a lock, a rate-limit slot) would then run on until
its condition comes true by itself: the inference cache's deadline test waited out a 60 s lock
that way. Such loops call :func:`raise_if_cancelled` after each call."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task has a cancellation pending that an
    awaited library call swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
