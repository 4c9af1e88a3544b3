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


# KEYS: 1 status, 2 the tenant's index. ARGV: 1 status JSON, 2 TTL s, 3 task id, 4 updated_at,
# 5 index size. One script rather than a MULTI of five commands: the same atomic write, one
# command for the client to pack and parse instead of seven (the status is written twice per task).
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[5]) + 1))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""
_encode = msgspec.json.Encoder().encode


class TaskStatusStore:
    def __init__(self, redis: Redis, *, ttl_s: float = HOT_TTL_S) -> None:
        self._redis = redis
        self._ttl_s = round(ttl_s)
        self._put = redis.register_script(_PUT)

    async def put(self, tenant: str, status: TaskStatus) -> None:
        """Write the status and index it; both expire with the hot tier's TTL."""
        await self._put(
            keys=[task_status_key(tenant, status.task_id), task_index_key(tenant)],
            args=[
                _encode(status),
                self._ttl_s,
                status.task_id,
                repr(status.updated_at),
                INDEX_MAX,
            ],
        )

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
