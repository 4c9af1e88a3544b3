"""The projector service: one durable pull consumer per stream, each handled by a ``LiveWriter``
(batched, ordered upserts), the KV mirrors, and the periodic jobs (lag gauges, schedule
reconciliation, warm-tier pruning). Resources open in the start-up hook, after migrations."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from redis.asyncio import Redis

from zhongshu.projector import lag, retention
from zhongshu.projector.db import connection, open_pool
from zhongshu.projector.hot import HotTier
from zhongshu.projector.projections import Projection, all_projections, schedules
from zhongshu.projector.projections import definitions as kv
from zhongshu.projector.settings import ProjectorSettings
from zhongshu.projector.writer import LiveWriter
from zhongshu.runtime import Delivery, Service
from zhongshu.runtime.periodic import Periodic

BATCH = 100
"""Messages per fetch, hence per transaction."""


def _raw(data: bytes) -> bytes:
    return data  # projections decode: some streams hold more than envelopes


def build_service() -> Service:
    service = Service(
        "projector",
        ProjectorSettings,
        description="Read models in PostgreSQL (warm) and Redis (hot).",
        publishes=[],
    )
    projections = all_projections()

    @service.on_startup
    async def open_resources(svc: Service) -> None:
        settings = cast(ProjectorSettings, svc.settings)
        pool = await open_pool(settings.postgres_url, size=settings.projector_pool_size)
        redis: Redis = Redis.from_url(settings.redis_url)
        hot = HotTier(redis, ttl_s=settings.hot_ttl_s)
        ack_wait = settings.ack_wait_s or 30.0
        svc.state.update(pool=pool, redis=redis)
        svc.state["writers"] = {
            p.stream: LiveWriter(p, pool, hot, ack_wait_s=ack_wait) for p in projections
        }
        watchers = [kv.MirrorWatcher(svc.js, pool, mirror) for mirror in kv.MIRRORS]
        for watcher in watchers:
            watcher.start()
        svc.state["mirrors"] = watchers
        sources = [(p.stream, p.subjects) for p in projections]
        sources += [(m.stream, (f"$KV.{m.bucket}.>",)) for m in kv.MIRRORS]
        jobs = [
            Periodic(
                "lag",
                settings.projector_lag_interval_s,
                partial(lag.refresh, svc.js, pool, sources),
            ),
            Periodic(
                "reconcile schedules",
                settings.projector_reconcile_interval_s,
                partial(schedules.reconcile, svc.js, pool),
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
        for job in jobs:
            job.start()
        svc.state["jobs"] = jobs

    @service.on_shutdown
    async def close_resources(svc: Service) -> None:
        for job in svc.state.pop("jobs", []):
            await job.stop()
        for watcher in svc.state.pop("mirrors", []):
            await watcher.stop()
        for writer in svc.state.pop("writers", {}).values():
            await writer.close()
        if (redis := svc.state.pop("redis", None)) is not None:
            await redis.aclose()
        if (pool := svc.state.pop("pool", None)) is not None:
            await pool.close()

    @service.readiness("postgres")
    async def postgres_ready() -> bool:
        pool = service.state.get("pool")
        try:
            if pool is None:
                return False
            async with connection(pool) as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except Exception:
            return False

    for projection in projections:
        _register(service, projection)
    return service


def _register(service: Service, projection: Projection[Any]) -> None:
    stream = projection.stream

    @service.consumer(
        stream=stream,
        subjects=projection.subjects,
        durable=projection.durable,
        decode=_raw,
        batch=BATCH,
        # A replica holds at most one batch unacked (order across replicas: see the README).
        max_ack_pending=BATCH,
    )
    async def handle(raw: bytes, delivery: Delivery) -> None:
        await service.state["writers"][stream].handle(raw, delivery)
