"""Pacing each app's calls under the platforms' quotas, cluster-wide (P6): bursts through two
notifier replicas against the fakes enforcing the platforms' limits (Feishu's per API per app,
DingTalk's per session and per robot) get no rate-limit refusal and reach every chat once;
limiter replicas sharing Redis never exceed a bucket together, as the platform counts it (on
arrival)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    outcomes,
    publish,
    replica_settings,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AlertRaised, ReplyGenerated
from zhongshu.contracts.events.chat import REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK, ReplyHandle
from zhongshu.devstack.fakes.base_openapi import SlidingWindow
from zhongshu.devstack.testing import drained
from zhongshu.notifier.adapters.ratelimit import Limit, SlidingWindowLimiter
from zhongshu.notifier.main import build_service
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import HubConfig

# Two replicas of 25 handlers each: the 50 in flight of the burst in PERFORMANCE.md (P6).
REPLICAS, IN_FLIGHT_EACH = 2, 25

StartReplicas = Callable[..., Awaitable[list[Service]]]


@pytest_asyncio.fixture
async def start_replicas(
    bus: Bus, platforms: Platforms, redis_url: str
) -> AsyncIterator[StartReplicas]:
    started: list[Service] = []

    async def start(config: HubConfig | None = None, **settings: Any) -> list[Service]:
        for _ in range(REPLICAS):
            service = build_service(config=config or platforms.config(), concurrency=IN_FLIGHT_EACH)
            await service.start(replica_settings(bus, platforms, redis_url, **settings))
            started.append(service)
        return started

    yield start
    for service in started:
        with contextlib.suppress(Exception):
            await service.stop()


def to_chat(chat_id: str, **fields: Any) -> ReplyGenerated:
    values: dict[str, Any] = {"text": f"answer for {chat_id}", **fields}
    return ReplyGenerated(
        reply_id=f"reply-{uuid.uuid4().hex[:12]}",
        platform="feishu",
        app="lark",
        tenant="acme",
        chat_id=chat_id,
        **values,
    )


async def test_a_burst_of_200_replies_from_one_feishu_app_is_never_refused_and_each_lands_once(
    bus: Bus, platforms: Platforms, start_replicas: StartReplicas
) -> None:
    # 200 chats, so only the app's quota of the send API (50/s, the fake's default) binds.
    replies = [to_chat(f"oc_{i}") for i in range(200)]
    await start_replicas()
    await publish(bus, *replies)
    delivered = await outcomes(bus, "delivered", "feishu", len(replies), within_s=60)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    fake = platforms.feishu
    assert fake.rate_limit_errors == 0
    assert fake.errors == []
    assert len(fake.api_calls["im.message.create"]) == len(replies)  # nothing sent twice
    assert Counter(d.uuid for d in fake.deliveries) == Counter(r.reply_id for r in replies)
    assert fake.deduplicated == 0
    assert sorted(d.attempts for d in delivered) == [1] * len(replies)


async def test_a_burst_of_streamed_cards_paces_every_cardkit_call_and_finishes_every_card(
    bus: Bus, platforms: Platforms, start_replicas: StartReplicas
) -> None:
    # The app's quota scaled down on both sides (10 calls/s per API) so 30 streamed answers
    # contend for it: creating cards, showing them, streaming text and closing the streams.
    fake = platforms.feishu
    fake.api_limits = (SlidingWindow(10, 1.0), SlidingWindow(1000, 60.0))
    await start_replicas(feishu_app_api_per_s=10, stream_min_interval_s=0.05)
    finals: dict[str, str] = {}
    chunks: list[ReplyGenerated] = []
    for i in range(30):
        base = to_chat(f"oc_stream_{i}", stream_id=f"s{i}", final=False)
        words = [f"w{i}.{n}" for n in range(4)]
        finals[base.reply_id] = " ".join(words)
        for n in range(len(words)):
            last = n == len(words) - 1
            chunks.append(
                ReplyGenerated(
                    **{
                        **{f: getattr(base, f) for f in base.__struct_fields__},
                        "text": " ".join(words[: n + 1]),
                        "chunk_index": n,
                        "final": last,
                    }
                )
            )
    await publish(bus, *chunks)
    await outcomes(bus, "delivered", "feishu", len(finals), within_s=90)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert fake.rate_limit_errors == 0  # no API's quota and no card's 10 ops/s exceeded
    shown = Counter(d.uuid for d in fake.deliveries)
    assert shown == Counter(finals.keys())  # every answer's card shown once
    for delivery in fake.deliveries:
        card = fake.cards[delivery.content["data"]["card_id"]]
        assert list(card.elements.values()) == [finals[str(delivery.uuid)]]
        assert not card.streaming
    # Updates between the first and the final text are best effort: some were skipped for the
    # quota rather than refused by the platform, and every final text went through.
    assert len(fake.api_calls["cardkit.card.settings"]) == len(finals)


async def test_bursts_to_one_dingtalk_session_and_one_robot_are_never_refused_across_replicas(
    bus: Bus, platforms: Platforms, start_replicas: StartReplicas
) -> None:
    # DingTalk's 20/min per session and per robot, scaled to 20 per 3 s on both sides (the
    # 10-minute block too) so the test takes seconds.
    dingtalk = platforms.dingtalk
    dingtalk.robot_limit = SlidingWindow(20, 3.0)
    dingtalk.block_s = 3.0
    route = {"dingtalk_robot": platforms.robot_token, "secret": platforms.robot_secret}
    await start_replicas(platforms.config(warning=[route]), dingtalk_robot_window_s=3.0)
    url, expires = dingtalk.session_webhook("cid-burst")
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK, url=url, chat_id="cid-burst", expires_at=expires
    )
    run = uuid.uuid4().hex
    replies = [
        ReplyGenerated(
            reply_id=f"reply-{run}-{i}",
            platform="dingtalk",
            app="ding",
            tenant="acme",
            chat_id="cid-burst",
            reply_handle=handle,
            text=f"answer {i}",
        )
        for i in range(30)
    ]
    await publish(bus, *replies)
    for i in range(30):
        alert = AlertRaised(
            level="warning", source="watchdog", title=f"disk {i}", dedupe_key=f"disk-{i}-{run}"
        )
        env = wire.make_envelope(alert, id=f"alert-{run}-{i}", source="test", tenant="")
        await bus.js.publish(
            subjects.alert(alert.level, alert.source), wire.encode(env), headers={H.MSG_ID: env.id}
        )
    await dingtalk.wait_until(lambda: len(dingtalk.deliveries) >= 60, 60)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    assert dingtalk.rate_limit_errors == 0
    sessions = Counter(d.text for d in dingtalk.delivered_to("session"))
    assert sessions == Counter(f"answer {i}" for i in range(30))
    robot = Counter(d.content["title"] for d in dingtalk.delivered_to("robot"))
    assert robot == Counter(f"[WARNING] disk {i}" for i in range(30))


async def test_two_limiter_replicas_never_exceed_any_bucket_together_as_the_platform_counts(
    redis: Redis,
) -> None:
    run = uuid.uuid4().hex
    replicas = [SlidingWindowLimiter(redis), SlidingWindowLimiter(redis)]
    app = Limit(f"{run}:app", 6, 0.5)
    chats = [Limit(f"{run}:chat:{c}", 3, 0.5) for c in range(3)]
    # The platform's own count, on arrival: what the fake platforms use.
    platform = {limit.key: SlidingWindow(limit.count, limit.window_s) for limit in (app, *chats)}
    refused: list[str] = []

    async def call(i: int) -> None:
        chat = chats[i % len(chats)]
        _, confirm = await replicas[i % 2].take_all((chat, app))
        await asyncio.sleep(0.002 * (i % 5))  # the request on its way, longer for some
        refused.extend(key for key in (chat.key, app.key) if not platform[key].allow(key))
        await asyncio.sleep(0.001)  # the answer on its way back
        await confirm()

    await asyncio.gather(*(call(i) for i in range(36)))
    assert refused == []


async def test_a_take_of_several_buckets_is_all_or_none(redis: Redis) -> None:
    limiter, run = SlidingWindowLimiter(redis), uuid.uuid4().hex
    roomy, full = Limit(f"{run}:roomy", 2, 60.0), Limit(f"{run}:full", 1, 60.0)
    assert (await limiter.try_take_all((full,)))[0] == 0
    wait, _ = await limiter.try_take_all((roomy, full))
    assert wait > 0
    # The refused take left the roomy bucket untouched: both its slots are still free.
    assert (await limiter.try_take_all((roomy,)))[0] == 0
    assert (await limiter.try_take_all((roomy,)))[0] == 0
    assert (await limiter.try_take_all((roomy,)))[0] > 0


async def test_a_weighted_take_counts_as_that_many_calls(redis: Redis) -> None:
    limiter, run = SlidingWindowLimiter(redis), uuid.uuid4().hex
    card = f"{run}:card"
    assert (await limiter.try_take_all((Limit(card, 3, 60.0),)))[0] == 0
    assert (await limiter.try_take_all((Limit(card, 3, 60.0, weight=2),)))[0] == 0
    assert (await limiter.try_take_all((Limit(card, 3, 60.0),)))[0] > 0
