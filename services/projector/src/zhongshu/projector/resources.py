"""What the projector holds while it runs, opened by its lifespan after the migrations and closed
in reverse once its consumers have drained: the warm tier's pool, the hot tier's Redis, one
``LiveWriter`` per stream, the KV mirrors and the periodic jobs (lag gauges, schedule
reconciliation, warm-tier pruning)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import asyncpg
from nats.js.client import JetStreamContext
from redis.asyncio import Redis

from zhongshu.projector import lag, retention
from zhongshu.projector.db import connection, open_pool
from zhongshu.projector.hot import HotTier
from zhongshu.projector.projections import all_projections, schedules
from zhongshu.projector.projections import definitions as kv
from zhongshu.projector.settings import ProjectorSettings
from zhongshu.projector.writer import LiveWriter
from zhongshu.runtime import Service
from zhongshu.runtime.periodic import Periodic


@dataclass(frozen=True)
class ProjectorDeps:
    pool: asyncpg.Pool
    writers: Mapping[str, LiveWriter]  # by stream
    mirrors: Sequence[kv.MirrorWatcher]


@contextlib.asynccontextmanager
async def lifespan(svc: Service[ProjectorSettings, ProjectorDeps]) -> AsyncIterator[ProjectorDeps]:
    settings = svc.settings
    async with contextlib.AsyncExitStack() as stack:
        pool = await open_pool(settings.postgres_url, size=settings.projector_pool_size)
        stack.push_async_callback(pool.close)
        redis = await stack.enter_async_context(Redis.from_url(settings.redis_url))
        hot = HotTier(redis, ttl_s=settings.hot_ttl_s)
        writers: dict[str, LiveWriter] = {}
        for projection in all_projections():
            writer = LiveWriter(
                projection,
                pool,
                hot,
                ack_wait_s=settings.ack_wait_s or 30.0,
                linger_s=settings.projector_batch_window_s,
            )
            stack.push_async_callback(writer.close)
            writers[projection.stream] = writer
        mirrors = [kv.MirrorWatcher(svc.js, pool, mirror) for mirror in kv.MIRRORS]
        for mirror in mirrors:
            stack.push_async_callback(mirror.stop)
            mirror.start()
        for job in _jobs(settings, svc.js, pool):
            await stack.enter_async_context(job)
        yield ProjectorDeps(pool=pool, writers=writers, mirrors=mirrors)


def _jobs(settings: ProjectorSettings, js: JetStreamContext, pool: asyncpg.Pool) -> list[Periodic]:
    sources = [(p.stream, p.subjects) for p in all_projections()]
    sources += [(m.stream, (f"$KV.{m.bucket}.>",)) for m in kv.MIRRORS]
    jobs = [
        Periodic("lag", settings.projector_lag_interval_s, partial(lag.refresh, js, pool, sources)),
        Periodic(
            "reconcile schedules",
            settings.projector_reconcile_interval_s,
            partial(schedules.reconcile, js, pool),
        ),
    ]
    if settings.warm_retention_months > 0:
        prune = partial(
            retention.prune,
            pool,
            settings.warm_retention_months,
            batch=settings.warm_retention_batch,
        )
        jobs.append(Periodic("prune", settings.warm_retention_interval_s, prune))
    return jobs


async def postgres_answers(deps: ProjectorDeps) -> bool:
    async with connection(deps.pool) as conn:
        return bool(await conn.fetchval("SELECT 1") == 1)
