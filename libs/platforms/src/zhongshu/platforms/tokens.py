"""Platform access tokens, cached in memory and, when a Redis is given, in Redis too (shared by
every replica and every service: one fetch per app for the cluster), and fetched again before
they expire, so a call never waits for a token that is about to lapse. Without Redis the cache
is this process's alone (``zhongshu doctor``, a script)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

Fetch = Callable[[], Awaitable[tuple[str, float]]]
"""Asks the platform for a token: returns (token, lifetime in seconds), raises when it cannot."""

# lark-oapi refreshes 10 minutes early; the same margin suits DingTalk's 2-hour tokens.
REFRESH_EARLY_S = 600.0
DEFAULT_PREFIX = "zhongshu:token:"


class TokenCache:
    def __init__(self, redis: Redis | None = None, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._memory: dict[str, tuple[str, float]] = {}  # key → (token, monotonic refresh time)
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, fetch: Fetch) -> str:
        """The cached token for ``key``, else one from ``fetch`` (one fetch at a time per key
        in this process; what ``fetch`` raises is raised and nothing is cached)."""
        cached = self._fresh(key)
        if cached is not None:
            return cached
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._fresh(key) or await self._shared(key)
            if cached is not None:
                return cached
            token, lifetime = await fetch()
            usable = max(
                1.0, lifetime - REFRESH_EARLY_S if lifetime > 2 * REFRESH_EARLY_S else lifetime / 2
            )
            if self._redis is not None:
                await self._redis.set(self._prefix + key, token, px=int(usable * 1000))
            self._memory[key] = (token, time.monotonic() + usable)
            return token

    async def invalidate(self, key: str, token: str) -> None:
        """Drop a token the platform refused (only if it is still the cached one)."""
        cached = self._memory.get(key)
        if cached and cached[0] == token:
            del self._memory[key]
        if self._redis is None:
            return
        shared = await self._redis.get(self._prefix + key)
        if shared is not None and _text(shared) == token:
            await self._redis.delete(self._prefix + key)

    def _fresh(self, key: str) -> str | None:
        cached = self._memory.get(key)
        return cached[0] if cached and cached[1] > time.monotonic() else None

    async def _shared(self, key: str) -> str | None:
        """A token another replica fetched, remembered here for what is left of its life."""
        if self._redis is None:
            return None
        shared = await self._redis.get(self._prefix + key)
        ttl = await self._redis.pttl(self._prefix + key) if shared else -1
        if not shared or ttl <= 0:
            return None
        token = _text(shared)
        self._memory[key] = (token, time.monotonic() + ttl / 1000)
        return token


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
