"""The notifier's access-token cache: the shared ``zhongshu.runtime.tokens`` cache under the
notifier's own Redis prefix (the keys it has always used, so a rolling upgrade keeps them)."""

from __future__ import annotations

from redis.asyncio import Redis

from zhongshu.runtime.tokens import REFRESH_EARLY_S, Fetch
from zhongshu.runtime.tokens import TokenCache as SharedTokenCache

__all__ = ["REFRESH_EARLY_S", "Fetch", "TokenCache"]

PREFIX = "zhongshu:notifier:token:"


class TokenCache(SharedTokenCache):
    def __init__(self, redis: Redis, *, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix=prefix)
