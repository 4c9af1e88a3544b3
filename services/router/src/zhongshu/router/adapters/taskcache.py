"""The hot task-status cache in Redis, written by the agent (keys in ``contracts.hotcache``)."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from redis.asyncio import Redis

from zhongshu.contracts.hotcache import task_index_key, task_status_key

log = logging.getLogger("zhongshu.router.taskcache")


class TaskCache(Protocol):
    async def status(self, tenant: str, task_id: str) -> dict[str, Any] | None: ...

    async def recent(self, tenant: str, limit: int) -> list[dict[str, Any]]: ...


def _parse(task_id: str, raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("task status %s is not JSON; treated as missing", task_id)
        return None
    if not isinstance(value, dict):
        return None
    value.setdefault("task_id", task_id)
    return value


class RedisTaskCache:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def status(self, tenant: str, task_id: str) -> dict[str, Any] | None:
        return _parse(task_id, await self._redis.get(task_status_key(tenant, task_id)))

    async def recent(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        """The newest tasks of the index whose status key still exists (statuses expire)."""
        ids = [
            i.decode() if isinstance(i, bytes) else str(i)
            for i in await self._redis.zrevrange(task_index_key(tenant), 0, limit - 1)
        ]
        if not ids:
            return []
        values = await self._redis.mget([task_status_key(tenant, i) for i in ids])
        found = (_parse(i, v) for i, v in zip(ids, values, strict=True))
        return [s for s in found if s is not None]
