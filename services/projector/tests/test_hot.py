"""The hot tier: task statuses in Redis expire 7 days (or ZHONGSHU_HOT_TTL_S) after their last
change, and the projector never undoes a terminal status the agent wrote."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from redis.asyncio import Redis

from services.projector.tests.projector_testing import (
    Bus,
    settings,
    settled,
    start_projector,
    unique,
)
from zhongshu.contracts import subjects
from zhongshu.contracts.events import TaskCompleted, TaskRequested, TaskStarted
from zhongshu.contracts.hotcache import (
    HOT_TTL_S,
    TaskState,
    TaskStatus,
    task_index_key,
    task_status_key,
)
from zhongshu.projector.hot import HotStatus, HotTier
from zhongshu.projector.settings import ProjectorSettings

NOW = 1_900_000_000.0


def status(task_id: str, state: TaskState, at: float, **fields: str) -> TaskStatus:
    return TaskStatus(task_id=task_id, status=state, updated_at=at, **fields)


async def stored(redis: Redis, tenant: str, task_id: str) -> TaskStatus | None:
    raw = await redis.get(task_status_key(tenant, task_id))
    return None if raw is None else msgspec.json.decode(raw, type=TaskStatus)


async def agent_wrote(redis: Redis, tenant: str, value: TaskStatus) -> None:
    """What the agent's TaskStatusStore does: SET with the full TTL."""
    await redis.set(task_status_key(tenant, value.task_id), msgspec.json.encode(value), ex=3600)


@pytest.fixture
def tenant() -> str:
    return unique("hot")


def hot_tier(redis: Redis, ttl_s: int = HOT_TTL_S) -> HotTier:
    return HotTier(redis, ttl_s=ttl_s, clock=lambda: NOW)


async def test_a_status_expires_seven_days_after_its_last_change(redis: Redis, tenant: str) -> None:
    hot = hot_tier(redis)
    assert await hot.put([HotStatus(tenant, status("t-1", "running", NOW))]) == 1
    ttl = await redis.ttl(task_status_key(tenant, "t-1"))
    assert HOT_TTL_S - 5 <= ttl <= HOT_TTL_S
    assert HOT_TTL_S - 5 <= await redis.ttl(task_index_key(tenant)) <= HOT_TTL_S
    assert await redis.zscore(task_index_key(tenant), "t-1") == NOW

    # A status last changed two days ago has five days left.
    await hot.put([HotStatus(tenant, status("t-2", "completed", NOW - 2 * 86400))])
    ttl = await redis.ttl(task_status_key(tenant, "t-2"))
    assert HOT_TTL_S - 2 * 86400 - 5 <= ttl <= HOT_TTL_S - 2 * 86400


async def test_a_status_older_than_the_ttl_is_not_written(redis: Redis, tenant: str) -> None:
    hot = hot_tier(redis)
    assert await hot.put([HotStatus(tenant, status("old", "completed", NOW - 8 * 86400))]) == 0
    assert await redis.exists(task_status_key(tenant, "old")) == 0


@pytest.mark.parametrize(
    ("stored_state", "stored_at", "new_state", "new_at", "written"),
    [
        ("completed", NOW, "running", NOW + 10, False),  # a redelivered start after the end
        ("failed", NOW, "queued", NOW + 10, False),
        ("completed", NOW, "completed", NOW - 10, False),  # an older outcome
        ("completed", NOW, "completed", NOW, False),  # the same one again
        ("completed", NOW, "failed", NOW + 10, True),  # a newer attempt's outcome wins
        ("running", NOW, "queued", NOW - 10, False),  # the agent is ahead of the projector
        ("running", NOW, "completed", NOW - 10, True),  # terminal beats running, whatever time
        ("queued", NOW, "running", NOW + 1, True),
        ("cancelled", NOW, "running", NOW + 1, False),
    ],
)
async def test_a_terminal_status_is_only_replaced_by_a_newer_terminal_one(
    redis: Redis,
    tenant: str,
    stored_state: TaskState,
    stored_at: float,
    new_state: TaskState,
    new_at: float,
    written: bool,
) -> None:
    await agent_wrote(redis, tenant, status("t", stored_state, stored_at, title="by the agent"))
    hot = hot_tier(redis)
    accepted = await hot.put([HotStatus(tenant, status("t", new_state, new_at))])
    after = await stored(redis, tenant, "t")
    assert after is not None
    assert accepted == int(written)
    assert (after.status, after.updated_at) == (
        (new_state, new_at) if written else (stored_state, stored_at)
    )


async def test_a_value_that_is_not_a_status_is_replaced(redis: Redis, tenant: str) -> None:
    await redis.set(task_status_key(tenant, "t"), b"not json")
    assert await hot_tier(redis).put([HotStatus(tenant, status("t", "running", NOW))]) == 1


async def test_the_newest_status_of_a_batch_is_written_once(redis: Redis, tenant: str) -> None:
    hot = hot_tier(redis)
    batch = [
        HotStatus(tenant, status("t", "queued", NOW)),
        HotStatus(tenant, status("t", "running", NOW + 1)),
        HotStatus(tenant, status("t", "completed", NOW + 2, result_text="done")),
    ]
    assert await hot.put(batch) == 1
    after = await stored(redis, tenant, "t")
    assert after is not None
    assert (after.status, after.result_text) == ("completed", "done")


async def test_the_projector_honours_a_configured_ttl(
    bus: Bus, database: str, redis_url: str, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = unique("ttl")
    await bus.send(
        subjects.task_requested(tenant),
        TaskRequested(task_id="q", tenant=tenant, requested_by="u", origin="api", prompt="hi"),
        tenant=tenant,
    )
    await bus.send(subjects.task_event(tenant, "q"), TaskStarted(task_id="q"), tenant=tenant)
    monkeypatch.setenv("ZHONGSHU_HOT_TTL_S", "3600")
    config = settings(bus.url, database, redis_url)
    assert config.hot_ttl_s == 3600
    service = await start_projector(config)
    try:
        await settled(service, service.deps.pool)
        after = await stored(redis, tenant, "q")
        assert after is not None
        assert after.status == "running"
        assert 3500 < await redis.ttl(task_status_key(tenant, "q")) <= 3600
    finally:
        await service.stop()


async def test_the_projector_keeps_statuses_seven_days_by_default(
    bus: Bus, database: str, redis_url: str, redis: Redis
) -> None:
    assert ProjectorSettings.model_fields["hot_ttl_s"].default == HOT_TTL_S == 7 * 24 * 3600
    tenant = unique("ttl")
    now = datetime.now(UTC)
    await bus.send(
        subjects.task_event(tenant, "c"), TaskStarted(task_id="c"), tenant=tenant, at=now
    )
    # The agent already wrote the outcome; the projector's later refresh must not reopen it.
    await agent_wrote(redis, tenant, status("c", "completed", time.time() + 60))
    await bus.send(
        subjects.task_event(tenant, "d"), TaskStarted(task_id="d"), tenant=tenant, at=now
    )
    await bus.send(
        subjects.task_event(tenant, "d"),
        TaskCompleted(task_id="d", result_text="x" * 2000),
        tenant=tenant,
        at=now + timedelta(seconds=1),
    )
    service = await start_projector(settings(bus.url, database, redis_url))
    try:
        await settled(service, service.deps.pool)
        ttl = await redis.ttl(task_status_key(tenant, "d"))
        assert HOT_TTL_S - 120 < ttl <= HOT_TTL_S
        done = await stored(redis, tenant, "d")
        assert done is not None
        assert (done.status, len(done.result_text)) == ("completed", 500)
        kept = await stored(redis, tenant, "c")
        assert kept is not None
        assert kept.status == "completed"
    finally:
        await service.stop()
