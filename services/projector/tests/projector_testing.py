"""What the projector's tests share: publishing events as their producers do, running projector
replicas in this process, waiting until they have applied everything, and dumping tables."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts.events import Event
from zhongshu.contracts.ids import new_event_id
from zhongshu.projector import lag
from zhongshu.projector.main import build_service
from zhongshu.projector.projections import all_projections
from zhongshu.projector.projections.definitions import MIRRORS, MirrorWatcher
from zhongshu.projector.resources import ProjectorDeps
from zhongshu.projector.settings import ProjectorSettings
from zhongshu.runtime import Service

ProjectorService = Service[ProjectorSettings, ProjectorDeps]
SETTLE_LIMIT_S = 120.0  # liveness only: how long to wait before calling the projector stuck


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Bus:
    url: str
    nc: Client
    js: JetStreamContext

    async def send(
        self,
        subject: str,
        event: Event,
        *,
        tenant: str,
        at: datetime | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> int:
        """Publish ``event`` in its envelope, as a producer does; returns its stream sequence."""
        env = wire.make_envelope(
            event, id=id or new_event_id(), source="zhongshu/test", tenant=tenant, time=at
        )
        ack = await self.js.publish(
            subject, wire.encode(env), headers={H.MSG_ID: env.id, **(headers or {})}
        )
        return int(ack.seq)


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A database of its own on the session's PostgreSQL, dropped afterwards."""
    name = f"projector_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def settings(
    bus_url: str, database_url: str, redis_url: str, **overrides: Any
) -> ProjectorSettings:
    values: dict[str, Any] = {
        "nats_url": bus_url,
        "postgres_url": database_url,
        "redis_url": redis_url,
        "health_port": 0,
        "uvloop": False,
        "projector_lag_interval_s": 0.2,
        "drain_timeout_s": 5.0,
        **overrides,
    }
    return ProjectorSettings(**values)


async def start_projector(config: ProjectorSettings) -> ProjectorService:
    service = build_service()
    await service.start(config)
    return service


SOURCES = [(p.stream, p.subjects) for p in all_projections()] + [
    (m.stream, (f"$KV.{m.bucket}.>",)) for m in MIRRORS
]


async def settled(service: ProjectorService, pool: asyncpg.Pool) -> None:
    """Wait until every durable consumer of ``service`` has nothing pending or unacked, its KV
    mirrors have read their buckets, and every read model's offset is its stream's last
    sequence."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_LIMIT_S
    mirrors: Sequence[MirrorWatcher] = service.deps.mirrors
    while True:
        infos = [
            await service.js.consumer_info(spec.stream, spec.durable)
            for spec in service.consumer_specs
        ]
        drained = all(not i.num_pending and not i.num_ack_pending for i in infos)
        synced = all(m.synced.is_set() for m in mirrors)
        if drained and synced:
            lags = await lag.refresh(service.js, pool, SOURCES)
            if not any(lags.values()):
                return
        if loop.time() > deadline:
            raise AssertionError(f"the projector did not catch up: {infos}")
        await asyncio.sleep(0.05)


async def dump(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Every table of the database, each row as PostgreSQL's text form, sorted."""
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    out: dict[str, list[str]] = {}
    for row in tables:
        name = row["tablename"]
        rows = await conn.fetch(f'SELECT t::text AS r FROM "{name}" t ORDER BY 1')
        out[name] = [r["r"] for r in rows]
    return out
