"""Task statuses in the hot tier (keys and shape in ``contracts.hotcache``): written by the
agent as a task moves, read by the router's ``/status`` and by the agent's own tools."""

from __future__ import annotations

import logging

import msgspec
from redis.asyncio import Redis

from zhongshu.contracts.hotcache import (
    HOT_TTL_S,
    INDEX_MAX,
    TaskStatus,
    task_index_key,
    task_status_key,
)

log = logging.getLogger("zhongshu.agent.taskstatus")
_decoder = msgspec.json.Decoder(TaskStatus)


class TaskStatusStore:
    def __init__(self, redis: Redis, *, ttl_s: float = HOT_TTL_S) -> None:
        self._redis = redis
        self._ttl_s = round(ttl_s)

    async def put(self, tenant: str, status: TaskStatus) -> None:
        """Write the status and index it; both expire with the hot tier's TTL."""
        index = task_index_key(tenant)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(task_status_key(tenant, status.task_id), msgspec.json.encode(status))
            pipe.expire(task_status_key(tenant, status.task_id), self._ttl_s)
            pipe.zadd(index, {status.task_id: status.updated_at})
            pipe.zremrangebyrank(index, 0, -(INDEX_MAX + 1))
            pipe.expire(index, self._ttl_s)
            await pipe.execute()

    async def get(self, tenant: str, task_id: str) -> TaskStatus | None:
        raw = await self._redis.get(task_status_key(tenant, task_id))
        return None if raw is None else self._decode(task_id, raw)

    async def recent(
        self, tenant: str, limit: int, *, requested_by: str | None = None
    ) -> list[TaskStatus]:
        """Newest first; with ``requested_by``, only that requester's (looks a little deeper
        into the index, since others' tasks are skipped)."""
        depth = limit if requested_by is None else limit * 10
        ids = [
            i.decode() if isinstance(i, bytes) else str(i)
            for i in await self._redis.zrevrange(task_index_key(tenant), 0, depth - 1)
        ]
        if not ids:
            return []
        values = await self._redis.mget([task_status_key(tenant, i) for i in ids])
        found: list[TaskStatus] = []
        for task_id, raw in zip(ids, values, strict=True):
            status = None if raw is None else self._decode(task_id, raw)
            if status is None or (requested_by and status.requested_by != requested_by):
                continue
            found.append(status)
            if len(found) == limit:
                break
        return found

    @staticmethod
    def _decode(task_id: str, raw: bytes | str) -> TaskStatus | None:
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("task status %s is not a TaskStatus; treated as missing", task_id)
            return None
