"""Conversation memory on a real Redis: idempotent appends, sharing between replicas, the TTL,
compaction under concurrent appends and compactions, and /reset."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis

from zhongshu.agent.adapters.memory import (
    TURN_OVERHEAD_TOKENS,
    Conversation,
    ConversationMemory,
    Turn,
    estimate_tokens,
)

WEEK_MS = 7 * 24 * 3600 * 1000


@pytest_asyncio.fixture
async def other_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A second client: another replica's connection."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def conversation() -> tuple[str, str]:
    return "tenant-" + uuid.uuid4().hex[:8], "chat-1"


def exchange(command_id: str, question: str, answer: str, at: float = 0.0) -> tuple[Turn, Turn]:
    return (
        Turn(id=f"{command_id}:user", role="user", content=question, at=at),
        Turn(id=f"{command_id}:assistant", role="assistant", content=answer, at=at + 1),
    )


async def test_appended_turns_load_back_in_order(redis: Redis) -> None:
    memory = ConversationMemory(redis)
    tenant, conv = conversation()
    first, second = exchange("c1", "hi", "hello"), exchange("c2", "2+2?", "4")

    await memory.append(tenant, conv, *first)
    await memory.append(tenant, conv, *second)

    assert await memory.load(tenant, conv) == Conversation(turns=first + second)
    assert await memory.load(tenant, "another-chat") == Conversation()


async def test_a_redelivered_turn_is_not_stored_twice(redis: Redis) -> None:
    memory = ConversationMemory(redis)
    tenant, conv = conversation()
    turns = exchange("c1", "hi", "hello")

    await memory.append(tenant, conv, *turns)
    await memory.append(tenant, conv, *turns)
    await memory.append(tenant, conv, turns[1], turns[1])

    assert (await memory.load(tenant, conv)).turns == turns


async def test_two_replicas_share_one_history(redis: Redis, other_redis: Redis) -> None:
    a, b = ConversationMemory(redis), ConversationMemory(other_redis)
    tenant, conv = conversation()
    question, answer = exchange("c1", "my name is Li", "noted")

    await a.append(tenant, conv, question)
    await b.append(tenant, conv, question, answer)  # the command, redelivered to replica b

    assert await a.load(tenant, conv) == await b.load(tenant, conv)
    assert (await a.load(tenant, conv)).turns == (question, answer)


async def test_the_ttl_is_a_week_and_each_append_refreshes_it(redis: Redis) -> None:
    memory = ConversationMemory(redis)
    tenant, conv = conversation()
    await memory.append(tenant, conv, *exchange("c1", "hi", "hello"))
    turns_key, ids_key, _ = memory.keys(tenant, conv)
    for key in (turns_key, ids_key):
        assert WEEK_MS - 60_000 < await redis.pttl(key) <= WEEK_MS

    await redis.pexpire(turns_key, 5_000)
    await redis.pexpire(ids_key, 5_000)
    await memory.append(tenant, conv, *exchange("c2", "still there?", "yes"))
    for key in (turns_key, ids_key):
        assert WEEK_MS - 60_000 < await redis.pttl(key) <= WEEK_MS


def long_exchange(i: int) -> tuple[Turn, Turn]:
    # 100 + 100 characters: 25 + 25 tokens, plus the overhead of each turn.
    return exchange(f"c{i}", f"q{i} " + "x" * 97, f"a{i} " + "y" * 97, at=float(i))


class Summarizer:
    """Records what it was asked and answers with a fixed summary."""

    def __init__(self, summary: str = "S") -> None:
        self.summary = summary
        self.calls: list[tuple[str, tuple[Turn, ...]]] = []

    async def __call__(self, previous: str, turns: tuple[Turn, ...]) -> str:
        self.calls.append((previous, turns))
        return self.summary


async def test_compaction_folds_the_oldest_turns_into_the_summary(redis: Redis) -> None:
    per_turn = 25 + TURN_OVERHEAD_TOKENS
    # Ten turns of 29 tokens (290) over a budget of 200: keep what fits in 100 (three turns).
    memory = ConversationMemory(redis, token_budget=200)
    tenant, conv = conversation()
    turns = tuple(t for i in range(5) for t in long_exchange(i))
    await memory.append(tenant, conv, *turns)
    summarize = Summarizer("the user asked five things")

    assert await memory.compact(tenant, conv, summarize)

    kept = 100 // per_turn
    assert summarize.calls == [("", turns[:-kept])]
    assert await memory.load(tenant, conv) == Conversation(
        summary="the user asked five things", turns=turns[-kept:]
    )


async def test_a_compaction_folds_the_previous_summary_into_the_new_one(redis: Redis) -> None:
    memory = ConversationMemory(redis, token_budget=200)
    tenant, conv = conversation()
    await memory.append(tenant, conv, *(t for i in range(5) for t in long_exchange(i)))
    assert await memory.compact(tenant, conv, Summarizer("first"))
    more = tuple(t for i in range(5, 10) for t in long_exchange(i))
    await memory.append(tenant, conv, *more)
    summarize = Summarizer("second")

    assert await memory.compact(tenant, conv, summarize)

    assert summarize.calls[0][0] == "first"
    assert (await memory.load(tenant, conv)).summary == "second"


async def test_within_the_budget_nothing_is_compacted(redis: Redis) -> None:
    memory = ConversationMemory(redis, token_budget=3000)
    tenant, conv = conversation()
    turns = tuple(t for i in range(5) for t in long_exchange(i))
    await memory.append(tenant, conv, *turns)
    summarize = Summarizer()

    assert not await memory.compact(tenant, conv, summarize)
    assert summarize.calls == []
    assert (await memory.load(tenant, conv)).turns == turns


async def test_a_turn_appended_during_compaction_survives(redis: Redis, other_redis: Redis) -> None:
    memory, other_replica = (
        ConversationMemory(redis, token_budget=200),
        ConversationMemory(other_redis, token_budget=200),
    )
    tenant, conv = conversation()
    turns = tuple(t for i in range(5) for t in long_exchange(i))
    await memory.append(tenant, conv, *turns)
    late = exchange("late", "one more thing", "sure")

    async def slow_summary(previous: str, old: tuple[Turn, ...]) -> str:
        # While the model summarizes, another replica answers the next command.
        await other_replica.append(tenant, conv, *late)
        return "S"

    assert await memory.compact(tenant, conv, slow_summary)

    stored = await memory.load(tenant, conv)
    assert stored.summary == "S"
    assert stored.turns[-2:] == late
    assert stored.turns[:-2] == turns[-len(stored.turns) + 2 :]


async def test_of_two_racing_compactions_one_wins_and_nothing_is_lost(
    redis: Redis, other_redis: Redis
) -> None:
    a = ConversationMemory(redis, token_budget=200)
    b = ConversationMemory(other_redis, token_budget=200)
    tenant, conv = conversation()
    turns = tuple(t for i in range(5) for t in long_exchange(i))
    await a.append(tenant, conv, *turns)
    b_won: list[bool] = []

    async def racing_summary(previous: str, old: tuple[Turn, ...]) -> str:
        b_won.append(await b.compact(tenant, conv, Summarizer("by b")))
        return "by a"

    assert not await a.compact(tenant, conv, racing_summary)

    assert b_won == [True]
    stored = await a.load(tenant, conv)
    assert stored.summary == "by b"
    assert stored.turns == turns[-len(stored.turns) :]


async def test_reset_clears_the_conversation_for_good(redis: Redis) -> None:
    memory = ConversationMemory(redis, token_budget=200)
    tenant, conv = conversation()
    old = tuple(t for i in range(5) for t in long_exchange(i))
    await memory.append(tenant, conv, *old)
    assert await memory.compact(tenant, conv, Summarizer())

    await memory.reset(tenant, conv)

    assert await memory.load(tenant, conv) == Conversation()
    await memory.append(tenant, conv, *old)  # a command redelivered after /reset
    fresh = exchange("after-reset", "hi again", "hello")
    await memory.append(tenant, conv, *fresh)
    assert await memory.load(tenant, conv) == Conversation(turns=fresh)


async def test_reset_refuses_a_compaction_in_progress(redis: Redis) -> None:
    memory = ConversationMemory(redis, token_budget=200)
    tenant, conv = conversation()
    await memory.append(tenant, conv, *(t for i in range(5) for t in long_exchange(i)))

    async def summary_then_reset(previous: str, old: tuple[Turn, ...]) -> str:
        await memory.reset(tenant, conv)
        return "stale"

    assert not await memory.compact(tenant, conv, summary_then_reset)
    assert await memory.load(tenant, conv) == Conversation()


def test_token_estimates() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 400) == 100
    assert estimate_tokens("Hello, how are you today?") == 7  # 25 characters
    assert estimate_tokens("你好，世界") == 5  # four ideographs and a full-width comma
    assert estimate_tokens("こんにちは") == 5
    assert estimate_tokens("请用 Python 写一个函数") == 6 + 3  # 6 CJK, 9 other characters
