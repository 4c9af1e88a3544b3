"""Flow control: per-token and per-tenant rate limits (GCRA in Redis, shared by every replica)
and a daily task quota per tenant, answered with 429, `Retry-After` and `RateLimit-*` headers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from nats.js.client import JetStreamContext
from redis.asyncio import Redis

from services.gateway.tests.gateway_testing import StartGateway
from zhongshu.contracts import subjects
from zhongshu.devstack.testing import collect
from zhongshu.gateway.adapters.ratelimit import RedisRateLimiter
from zhongshu.runtime.hubconfig import Rate


async def test_over_the_token_rate_is_429_with_retry_after_and_ratelimit_headers(
    start_gateway: StartGateway,
) -> None:
    api = await start_gateway(api_rate=Rate(count=3, period_s=60))
    auth = api.auth("tasks:read")
    remaining = []
    for _ in range(3):
        answer = await api.client.get("/api/v1/tasks/x", headers=auth)
        assert answer.status_code == 404  # admitted
        assert answer.headers["ratelimit-limit"] == "3"
        remaining.append(int(answer.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    refused = await api.client.get("/api/v1/tasks/x", headers=auth)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:zhongshu:problem:rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request's worth of 60 s / 3
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) >= 1
    # Another token of the same tenant has its own allowance.
    other = await api.client.get("/api/v1/tasks/x", headers=api.auth("tasks:read", jti="t2"))
    assert other.status_code == 404


async def test_the_tenant_rate_holds_across_its_tokens(start_gateway: StartGateway) -> None:
    api = await start_gateway(api_tenant_rate=Rate(count=4, period_s=60))
    statuses = [
        (await api.client.get("/api/v1/tasks/x", headers=api.auth("tasks:read", jti=f"k{i}")))
        for i in range(5)
    ]
    assert [s.status_code for s in statuses] == [404, 404, 404, 404, 429]
    assert "tenant" in statuses[-1].json()["detail"]
    elsewhere = await api.client.get(
        "/api/v1/tasks/x", headers=api.auth("tasks:read", tenant="other" + api.tenant)
    )
    assert elsewhere.status_code == 404


async def test_the_daily_task_quota_is_429_until_midnight_utc_and_replays_stay_free(
    start_gateway: StartGateway, js: JetStreamContext
) -> None:
    api = await start_gateway(api_daily_tasks=2)
    auth = api.auth("tasks:write")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await api.client.post("/api/v1/tasks", json={"prompt": "1"}, headers={**auth, **key})
    second = await api.client.post("/api/v1/tasks", json={"prompt": "2"}, headers=auth)
    assert (first.status_code, second.status_code) == (202, 202)
    over = await api.client.post("/api/v1/tasks", json={"prompt": "3"}, headers=auth)
    assert over.status_code == 429
    assert over.json()["type"] == "urn:zhongshu:problem:quota-exhausted"
    now = datetime.now(UTC)
    to_midnight = 86_400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert abs(int(over.headers["retry-after"]) - to_midnight) <= 5
    assert over.headers["ratelimit-limit"] == "2"
    assert over.headers["ratelimit-remaining"] == "0"
    replay = await api.client.post("/api/v1/tasks", json={"prompt": "1"}, headers={**auth, **key})
    assert replay.status_code == 202
    assert replay.json()["task_id"] == first.json()["task_id"]
    assert len(await collect(js, subjects.task_requested(api.tenant), within_s=1)) == 2

    quotas = (await api.client.get("/api/v1/quotas", headers=api.auth())).json()
    assert quotas["daily_tasks"] == {
        "limit": 2,
        "used": 2,
        "remaining": 0,
        "resets_at": quotas["daily_tasks"]["resets_at"],
    }
    assert datetime.fromisoformat(quotas["daily_tasks"]["resets_at"]).hour == 0


async def test_asking_for_quotas_spends_nothing(start_gateway: StartGateway) -> None:
    api = await start_gateway(api_rate=Rate(count=5, period_s=60))
    auth = api.auth("tasks:read")
    await api.client.get("/api/v1/tasks/x", headers=auth)
    for _ in range(3):
        quotas = (await api.client.get("/api/v1/quotas", headers=auth)).json()
        assert quotas["token"]["limit"] == 5
        assert quotas["token"]["remaining"] == 4
        assert quotas["tenant"] == api.tenant


async def test_gcra_admits_a_burst_of_the_limit_then_one_per_interval(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    tenant, rate = "gcra" + uuid.uuid4().hex[:8], Rate(count=10, period_s=10)
    now = 1_000_000_000_000_000  # µs; the script takes the clock as given

    async def charge(at_us: int):  # type: ignore[no-untyped-def]
        return await limiter.charge(
            tenant=tenant,
            token_id="k",
            per_token=rate,
            per_tenant=Rate(count=1000, period_s=1),
            now_us=at_us,
        )

    burst = [await charge(now) for _ in range(11)]
    assert [v.allowed for v in burst] == [True] * 10 + [False]
    assert [v.token.remaining for v in burst[:10]] == list(range(9, -1, -1))
    assert burst[10].retry_after_ms == 1000  # one emission interval: 10 s / 10
    assert not (await charge(now + 999_000)).allowed
    assert (await charge(now + 1_000_000)).allowed  # exactly one interval later
    refused = await charge(now + 1_000_000)
    assert not refused.allowed
    assert refused.token.reset_ms == 10_000  # whole again 11 s after the burst: 10 s from now
