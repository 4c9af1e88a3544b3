"""Fixtures for the gateway: the session's NATS (provisioned), Redis and PostgreSQL, a database
of the gateway tests' own with the warm-tier schema applied from the projector's migration files
(no projector runs), and running gateway services with a fresh tenant each."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest_asyncio

from services.gateway.tests.gateway_testing import (
    CALLBACK_KEY,
    GENEROUS,
    MIGRATIONS,
    SECRET,
    Api,
    StartGateway,
    new_tenant,
)
from zhongshu.gateway.main import build_service
from zhongshu.gateway.settings import GatewaySettings
from zhongshu.runtime.service import Service


@pytest_asyncio.fixture(scope="session")
async def warm_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of these tests' own with the projector's warm-tier schema."""
    name = "gateway_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        for path in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            await conn.execute(path.read_text())
    finally:
        await conn.close()
    yield url


@pytest_asyncio.fixture
async def warm(warm_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the warm tier, to insert the rows the projector would write."""
    conn = await asyncpg.connect(warm_url)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def start_gateway(
    provisioned_nats_url: str, redis_url: str, warm_url: str
) -> AsyncIterator[StartGateway]:
    """Start a gateway (settings overridable) for a fresh tenant; stopped after the test."""
    started: list[tuple[Service, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Api:
        settings: dict[str, Any] = {
            "nats_url": provisioned_nats_url,
            "redis_url": redis_url,
            "postgres_url": warm_url,
            "callback_key": CALLBACK_KEY,
            "jwt_secret": SECRET,
            "api_rate": GENEROUS,
            "api_tenant_rate": GENEROUS,
            "uvloop": False,
            **overrides,
        }
        service = build_service()
        await service.start(GatewaySettings(**settings))
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.health_port}", timeout=30)
        started.append((service, client))
        return Api(service, client, new_tenant())

    yield start
    for service, client in reversed(started):
        with contextlib.suppress(Exception):
            await client.aclose()
        await service.stop()


@pytest_asyncio.fixture
async def api(start_gateway: StartGateway) -> Api:
    return await start_gateway()
