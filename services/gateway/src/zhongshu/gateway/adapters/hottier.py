"""Task statuses in the hot tier (Redis; keys and shape in `contracts.hotcache`), written by the
agent and refreshed by the projector. The gateway reads them first, and writes only two things:
`queued` for a task it just accepted (if nothing newer is there), and `cancelled`."""

from __future__ import annotations

import logging

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from zhongshu.contracts.hotcache import (
    HOT_TTL_S,
    INDEX_MAX,
    TaskStatus,
    task_index_key,
    task_status_key,
)
from zhongshu.gateway.adapters import Unavailable

log = logging.getLogger("zhongshu.gateway.hottier")


class HotTier:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._decoder = msgspec.json.Decoder(TaskStatus)

    async def status(self, tenant: str, task_id: str) -> TaskStatus | None:
        try:
            raw = await self._redis.get(task_status_key(tenant, task_id))
        except RedisError as exc:
            raise Unavailable("the hot tier (Redis) cannot be read") from exc
        if raw is None:
            return None
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("task status %s is not a TaskStatus; treated as missing", task_id)
            return None

    async def queued(self, tenant: str, status: TaskStatus) -> None:
        """Record a task just accepted, unless the agent already wrote a newer status (NX).
        Best effort: the task is on the bus either way."""
        await self._write(tenant, status, only_if_absent=True)

    async def replace(self, tenant: str, status: TaskStatus) -> None:
        await self._write(tenant, status, only_if_absent=False)

    async def _write(self, tenant: str, status: TaskStatus, *, only_if_absent: bool) -> None:
        key = task_status_key(tenant, status.task_id)
        index = task_index_key(tenant)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, msgspec.json.encode(status), ex=HOT_TTL_S, nx=only_if_absent)
                pipe.zadd(index, {status.task_id: status.updated_at}, nx=only_if_absent)
                pipe.zremrangebyrank(index, 0, -(INDEX_MAX + 1))
                pipe.expire(index, HOT_TTL_S)
                await pipe.execute()
        except RedisError as exc:
            log.warning("task status %s not written to the hot tier: %r", status.task_id, exc)
