"""What the fake open-platform APIs share: a starlette app on uvicorn on 127.0.0.1 that starts
and stops with ``async with``, a sliding-window rate limiter, and failure injection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from zhongshu.devstack.fakes.local_server import LocalServer


class SlidingWindow:
    """At most ``limit`` calls per ``window_s`` per key, like the platforms count them."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._calls: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        if self.full(key):
            return False
        self.record(key)
        return True

    def full(self, key: str) -> bool:
        """No room for one more call now (nothing is counted)."""
        now = time.monotonic()
        calls = self._calls[key]
        while calls and calls[0] <= now - self.window_s:
            calls.popleft()
        return len(calls) >= self.limit

    def record(self, key: str) -> None:
        self._calls[key].append(time.monotonic())

    def reset_in(self, key: str) -> float:
        calls = self._calls[key]
        return max(0.0, calls[0] + self.window_s - time.monotonic()) if calls else 0.0


@dataclass
class Injected:
    """One programmed answer: an HTTP status and JSON body, and/or a stall before answering.
    ``after_effect`` stalls after the message was recorded (the send "happened", the answer is
    lost: an ambiguous send)."""

    status: int = 200
    body: dict[str, Any] | None = None
    stall_s: float = 0.0
    after_effect: bool = False


class FakeServer(LocalServer):
    def __init__(self, routes: list[BaseRoute], host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(Starlette(routes=routes), host, port)
        self.injected: deque[Injected] = deque()
        self.answer_delay_s = 0.0  # every accepted send answers this much later (crash tests)
        self.changed = asyncio.Event()

    def inject(self, *answers: Injected) -> None:
        """The next sends get these answers, in order (token calls are not affected)."""
        self.injected.extend(answers)

    def next_injected(self) -> Injected | None:
        return self.injected.popleft() if self.injected else None

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_until(self, predicate: Any, within_s: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("timed out waiting at the fake")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))
