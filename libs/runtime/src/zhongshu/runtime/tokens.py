"""Platform access tokens, cached in memory and in Redis (shared by every replica) and fetched
again before they expire, so a call never waits for a token that is about to lapse. Shared by
the notifier (sends) and the router (contact look-ups); each platform's fetch stays in its
adapter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

Fetch = Callable[[], Awaitable[tuple[str, float]]]
"""Asks the platform for a token: returns (token, lifetime in seconds)."""

# lark-oapi refreshes 10 minutes early; the same margin suits DingTalk's 2-hour tokens.
REFRESH_EARLY_S = 600.0
DEFAULT_PREFIX = "zhongshu:token:"


class TokenCache:
    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._memory: dict[str, tuple[str, float]] = {}  # key → (token, monotonic refresh time)
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, fetch: Fetch) -> str:
        cached = self._memory.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._memory.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            shared = await self._redis.get(self._prefix + key)
            ttl = await self._redis.pttl(self._prefix + key) if shared else -1
            if shared and ttl > 0:
                token = shared.decode() if isinstance(shared, bytes) else str(shared)
                self._memory[key] = (token, time.monotonic() + ttl / 1000)
                return token
            token, lifetime = await fetch()
            usable = max(
                1.0, lifetime - REFRESH_EARLY_S if lifetime > 2 * REFRESH_EARLY_S else lifetime / 2
            )
            await self._redis.set(self._prefix + key, token, px=int(usable * 1000))
            self._memory[key] = (token, time.monotonic() + usable)
            return token

    async def invalidate(self, key: str, token: str) -> None:
        """Drop a token the platform refused (only if it is still the cached one)."""
        cached = self._memory.get(key)
        if cached and cached[0] == token:
            del self._memory[key]
        shared = await self._redis.get(self._prefix + key)
        if (
            shared is not None
            and (shared.decode() if isinstance(shared, bytes) else shared) == token
        ):
            await self._redis.delete(self._prefix + key)
