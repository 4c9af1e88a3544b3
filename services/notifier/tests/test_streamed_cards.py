"""Streamed replies under load, on real NATS and Redis against the fake platforms, with one or
two notifier replicas: one card per answer, shown once, its updates reaching the platform one
at a time in sequence order, and the final chunk waiting for the card in the process instead of
going back to the broker for a backoff."""

from __future__ import annotations

import asyncio
import collections
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest_asyncio
from starlette.requests import Request
from starlette.responses import Response

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    StartNotifier,
    dingtalk_session_reply,
    outcomes,
    publish,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import ReplyGenerated
from zhongshu.contracts.events.chat import (
    REPLY_HANDLE_FEISHU_MESSAGE,
    ReplyHandle,
)
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI, StreamingCard
from zhongshu.devstack.testing import drained
from zhongshu.notifier import domain
from zhongshu.notifier.domain import DeliveryRecord

TEMPLATE = "ai-card-template.schema"  # the fake's AI card template, with a `content` variable


class SlowFeishu(FakeFeishuOpenAPI):
    """The fake Feishu with chosen CardKit calls held before the platform looks at them (a slow
    network path or a busy gateway), so calls sent at the same time can arrive out of order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.create_delay_s = 0.0
        self.first_update_delay_s = 0.0  # the first content update of each card
        self._updated: set[str] = set()

    async def _create_card(self, request: Request) -> Response:
        await asyncio.sleep(self.create_delay_s)
        return await super()._create_card(request)

    async def _card_content(self, request: Request) -> Response:
        card_id = request.path_params["card_id"]
        if card_id not in self._updated:
            self._updated.add(card_id)
            await asyncio.sleep(self.first_update_delay_s)
        return await super()._card_content(request)


@pytest_asyncio.fixture
async def feishu(platforms: Platforms) -> AsyncIterator[SlowFeishu]:
    """Answers for the app the configuration names (the platforms' own Feishu fake's)."""
    fake = SlowFeishu(app_id=platforms.feishu.app_id, app_secret=platforms.feishu.app_secret)
    async with fake:
        yield fake


def chunks(base: ReplyGenerated, count: int) -> list[ReplyGenerated]:
    """The chunks of one streamed answer, each holding the whole text so far."""
    words = [f"{base.reply_id}.w{i}" for i in range(count)]
    return [
        msgspec.structs.replace(
            base,
            text=" ".join(words[: i + 1]),
            chunk_index=i if i < count - 1 else 1_000_000_000,
            final=i == count - 1,
        )
        for i in range(count)
    ]


def feishu_answer(fake: FakeFeishuOpenAPI, chat: str) -> ReplyGenerated:
    original = fake.user_message(chat)
    return ReplyGenerated(
        reply_id=f"reply-{uuid.uuid4().hex[:12]}",
        platform="feishu",
        app="lark",
        tenant="acme",
        chat_id=chat,
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_MESSAGE, message_id=original, chat_id=chat
        ),
        stream_id="s",
        final=False,
    )


def dingtalk_answer(platforms: Platforms, conversation: str) -> ReplyGenerated:
    return dingtalk_session_reply(
        platforms,
        conversation,
        f"reply-{uuid.uuid4().hex[:12]}",
        chat_kind="group",
        stream_id="s",
        final=False,
    )


async def redelivered(bus: Bus) -> int:
    """How many reply chunks went back to the broker and came again."""
    info = await bus.js.consumer_info(streams.REPLIES.name, "notifier-replies")
    return int(info.num_redelivered)


def shown_card(fake: FakeFeishuOpenAPI, reply_id: str) -> StreamingCard:
    [shown] = [d for d in fake.deliveries if d.uuid == reply_id]
    return fake.cards[shown.content["data"]["card_id"]]


async def test_updates_of_one_card_reach_the_platform_one_at_a_time_in_sequence_order(
    bus: Bus, platforms: Platforms, feishu: SlowFeishu, start_notifier: StartNotifier
) -> None:
    # The first update of the card is slow to arrive; chunks keep coming at an LLM's pace
    # meanwhile, on two replicas. An update sent while it is on its way would arrive first,
    # and CardKit would refuse the slow one (300317: sequence not strictly increasing).
    feishu.first_update_delay_s = 0.5
    for _ in range(2):
        await start_notifier(feishu_base_url=feishu.base_url)
    answer = chunks(feishu_answer(feishu, "oc_slow"), 40)
    for chunk in answer:
        await publish(bus, chunk)
        await asyncio.sleep(0.02)
    [delivered] = await outcomes(bus, "delivered", "feishu", 1, within_s=30)
    assert delivered.chunk_index == answer[-1].chunk_index
    assert feishu.errors == []
    card = shown_card(feishu, answer[0].reply_id)
    sequences = [seq for _, seq, _ in card.ops]
    assert sequences == sorted(set(sequences))
    assert len([op for op in card.ops if op[2] == "content"]) >= 2  # the slow one and others
    assert list(card.elements.values()) == [answer[-1].text]
    assert not card.streaming


async def test_a_final_chunk_that_comes_while_the_card_is_shown_waits_and_nothing_is_sent_twice(
    bus: Bus, platforms: Platforms, feishu: SlowFeishu, start_notifier: StartNotifier
) -> None:
    # Showing the card takes a while; the final chunk comes right behind the first one, on
    # either replica. Sending the show again would be absorbed by Feishu's uuid, but it is a
    # re-send without any fault.
    feishu.answer_delay_s = 0.3
    for _ in range(2):
        await start_notifier(feishu_base_url=feishu.base_url)
    answers = [chunks(feishu_answer(feishu, f"oc_{i}"), 2) for i in range(12)]
    await publish(bus, *(first for first, _ in answers))
    await asyncio.sleep(0.1)  # the cards are being shown
    await publish(bus, *(final for _, final in answers))
    delivered = await outcomes(bus, "delivered", "feishu", len(answers), within_s=30)
    assert {d.reply_id for d in delivered} == {a[0].reply_id for a in answers}
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert feishu.deduplicated == 0
    shown = collections.Counter(d.uuid for d in feishu.deliveries)
    assert shown == collections.Counter(a[0].reply_id for a in answers)
    for answer in answers:
        card = shown_card(feishu, answer[0].reply_id)
        assert list(card.elements.values()) == [answer[-1].text]
        assert not card.streaming
    assert feishu.errors == []
    assert await redelivered(bus) == 0  # every final waited in the process


async def test_the_final_chunk_waits_for_the_card_being_created_instead_of_a_backoff(
    bus: Bus, platforms: Platforms, feishu: SlowFeishu, start_notifier: StartNotifier
) -> None:
    # The final chunk comes while the first one is still creating the card: it must neither
    # create a second card nor go back to the broker (its first backoff is a second).
    feishu.create_delay_s = 0.3
    await start_notifier(feishu_base_url=feishu.base_url)
    answers = [chunks(feishu_answer(feishu, f"oc_{i}"), 2) for i in range(5)]
    await publish(bus, *itertools.chain.from_iterable(answers))
    await outcomes(bus, "delivered", "feishu", len(answers), within_s=30)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert await redelivered(bus) == 0
    assert len(feishu.cards) == len(answers)
    assert sorted(str(d.uuid) for d in feishu.deliveries) == sorted(a[0].reply_id for a in answers)
    assert all(not card.streaming for card in feishu.cards.values())


async def test_a_burst_of_dingtalk_ai_cards_neither_repeats_nor_drops_an_answer(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # DingTalk has no idempotency key: a card shown twice is a second card in the chat (the
    # fake refuses a reused outTrackId), a show given up is an answer lost.
    platforms.dingtalk.answer_delay_s = 0.3
    config = platforms.config(card_template_id=TEMPLATE)
    for _ in range(2):
        await start_notifier(config)
    answers = [chunks(dingtalk_answer(platforms, f"cidBurst{i}=="), 2) for i in range(12)]
    await publish(bus, *itertools.chain.from_iterable(answers))
    delivered = await outcomes(bus, "delivered", "dingtalk", len(answers), within_s=30)
    assert {d.reply_id for d in delivered} == {a[0].reply_id for a in answers}
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert await outcomes(bus, "ambiguous", "dingtalk", 1, within_s=0.2) == []
    assert await outcomes(bus, "failed", "dingtalk", 1, within_s=0.2) == []
    assert platforms.dingtalk.errors == []
    assert len(platforms.dingtalk.deliveries) == len(answers)  # one card each
    for answer in answers:
        card = platforms.dingtalk.ai_cards[answer[0].reply_id]
        assert card.params["content"] == answer[-1].text
        assert card.updates[-1].is_finalize
    assert await redelivered(bus) == 0


async def test_a_final_chunk_handled_again_after_a_crash_finds_its_card_closed_and_delivered(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # The worker closed the card's stream and died before recording it: the final chunk comes
    # again, and CardKit refuses its text now that the stream is closed (300309).
    fake = platforms.feishu
    await start_notifier()
    answer = chunks(feishu_answer(fake, "oc_crash"), 2)
    await publish(bus, *answer)
    await outcomes(bus, "delivered", "feishu", 1)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    kv = await bus.js.key_value(streams.DELIVERY_STATE_KV.bucket)
    key = domain.record_key("stream", answer[0].reply_id)
    entry = await kv.get(key)
    record = msgspec.json.decode(entry.value or b"", type=DeliveryRecord)
    assert record.finished
    unrecorded = msgspec.structs.replace(record, finished=False)
    await kv.update(key, msgspec.json.encode(unrecorded), last=entry.revision)
    again = wire.make_envelope(answer[-1], id="final-again", source="test", tenant="acme")
    await bus.js.publish(subjects.chat_reply("feishu", "acme"), wire.encode(again))
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    record = msgspec.json.decode((await kv.get(key)).value or b"", type=DeliveryRecord)
    assert (record.state, record.finished) == ("delivered", True)
    assert await outcomes(bus, "failed", "feishu", 1, within_s=0.2) == []
    card = shown_card(fake, answer[0].reply_id)
    assert list(card.elements.values()) == [answer[-1].text]
    assert len(fake.deliveries) == 1
