"""The Redis GCRA script against the pure arithmetic, with an injected clock, on a real Redis."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from zhongshu.router import domain
from zhongshu.router.adapters.ratelimit import RedisRateLimiter, keys
from zhongshu.runtime.hubconfig import Rate


async def test_the_script_computes_what_the_domain_computes(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    rate = Rate(count=3, period_s=10)
    app, user = "app-" + uuid.uuid4().hex[:8], "u"
    now = 1_700_000_000_000
    tat: int | None = None
    # A burst, a refusal, partial recovery, full recovery.
    for i, at in enumerate([0, 0, 0, 0, 1_000, 3_334, 3_400, 20_000, 20_000]):
        result = domain.gcra(tat, now + at, rate)
        if result.allowed:
            tat = result.tat_ms
        verdict = await limiter.check(
            app=app,
            inbound_id=f"m{i}",
            user=user,
            chat="c",
            per_user=rate,
            per_chat=None,
            now_ms=now + at,
        )
        assert (verdict.allowed, verdict.retry_after_ms) == (result.allowed, result.retry_after_ms)


async def test_one_notice_per_window_and_the_chat_limit_applies_to_everyone(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    app = "app-" + uuid.uuid4().hex[:8]
    now = 1_700_000_000_000
    per_chat = Rate(count=2, period_s=60)

    async def check(i: int, user: str, at: int = 0) -> domain.LimitVerdict:
        return await limiter.check(
            app=app, inbound_id=f"m{i}", user=user, chat="c", per_user=None,
            per_chat=per_chat, now_ms=now + at,
        )  # fmt: skip

    assert (await check(0, "a")).allowed
    assert (await check(1, "b")).allowed
    first = await check(2, "c")
    assert (first.allowed, first.scope, first.notify) == (False, "chat", True)
    assert not (await check(3, "d")).notify  # silence for the rest of the window


async def test_a_repeated_event_gets_its_first_verdict_again(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    app = "app-" + uuid.uuid4().hex[:8]
    rate = Rate(count=1, period_s=60)
    verdicts = [
        await limiter.check(
            app=app, inbound_id="same", user="u", chat="c", per_user=rate, per_chat=None
        )
        for _ in range(3)
    ]
    assert all(v.allowed for v in verdicts)
    assert await redis.pttl(keys(app, "same", "u", "c")[0]) > 0  # the memo expires
