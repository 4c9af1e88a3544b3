"""DingTalk AI cards on real NATS and Redis against the fake platform: an app with a card
template streams a reply into one card, throttled, in order, ending with the full text."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    StartNotifier,
    outcomes,
    publish,
)
from zhongshu.contracts.events import ReplyDelivered, ReplyDeliveryFailed, ReplyGenerated
from zhongshu.contracts.events.chat import REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK, ReplyHandle
from zhongshu.devstack.fakes.dingtalk_openapi import AICard

TEMPLATE = "ai-card-template.schema"  # the fake's template, with a `content` variable
GROUP = "cidGroupOps=="


def webhook_handle(
    platforms: Platforms, conversation_id: str, *, expired: bool = False, **fields: Any
) -> ReplyHandle:
    url, expires = platforms.dingtalk.session_webhook(
        conversation_id, expires_in_s=-1 if expired else 5400
    )
    return ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id=conversation_id,
        expires_at=datetime.now(UTC) - timedelta(minutes=1) if expired else expires,
        **fields,
    )


def streamed(handle: ReplyHandle, count: int) -> list[ReplyGenerated]:
    """The chunks of one streamed reply, each holding the whole text so far."""
    base = ReplyGenerated(
        reply_id=f"reply-{uuid.uuid4().hex[:12]}",
        platform="dingtalk",
        app="ding",
        tenant="acme",
        chat_id=handle.chat_id or GROUP,
        reply_handle=handle,
        stream_id="s1",
        final=False,
    )
    words = [f"word{i}" for i in range(count)]
    return [
        msgspec.structs.replace(
            base, text=" ".join(words[: i + 1]), chunk_index=i, final=i == count - 1
        )
        for i in range(count)
    ]


async def publish_paced(bus: Bus, chunks: list[ReplyGenerated]) -> None:
    for chunk in chunks:
        await publish(bus, chunk)
        await asyncio.sleep(0.02)  # an LLM's pace, faster than the card may be updated


def assert_typed_in_order(card: AICard, final_text: str) -> None:
    """Every update carries the whole text so far, each newer than the last, and the final
    text closes the card: nothing older ever overwrites it."""
    updates = card.updates
    assert updates, "the card was never updated"
    assert all(u.is_full and u.key == "content" and not u.is_error for u in updates)
    lengths = [len(u.content) for u in updates]
    assert lengths == sorted(set(lengths))
    assert [u.is_finalize for u in updates] == [False] * (len(updates) - 1) + [True]
    assert updates[-1].content == final_text
    assert card.params["content"] == final_text
    assert len({u.guid for u in updates}) == len(updates)  # a guid per update


async def test_a_streamed_dingtalk_reply_types_into_one_ai_card_and_ends_with_the_full_text(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    chunks = streamed(webhook_handle(platforms, GROUP, chat_kind="group"), 30)
    await start_notifier(platforms.config(card_template_id=TEMPLATE))
    await publish_paced(bus, chunks)
    [delivered] = await outcomes(bus, "delivered", "dingtalk", 1)
    assert isinstance(delivered, ReplyDelivered)
    assert delivered.chunk_index == len(chunks) - 1
    [shown] = platforms.dingtalk.deliveries  # the card, and no plain message besides
    assert (shown.channel, shown.target, shown.msgtype) == ("card-group", GROUP, "aiCard")
    card = platforms.dingtalk.ai_cards[chunks[0].reply_id]  # outTrackId = the reply id
    assert (card.template_id, card.space_type, card.space_id) == (TEMPLATE, "IM_GROUP", GROUP)
    assert_typed_in_order(card, chunks[-1].text)
    assert platforms.dingtalk.errors == []  # within the per-card rate
    updates = [u.at for u in card.updates]
    assert len(updates) < len(chunks)  # throttled: not one update per chunk
    for start in updates:  # at most 5 per second (+ the final, which always goes)
        assert sum(1 for t in updates if start <= t < start + 1.0) <= 6


async def test_a_one_to_one_stream_goes_to_the_user_s_robot_chat_after_the_webhook_expired(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    handle = webhook_handle(
        platforms, "cidP2pAlice==", expired=True, chat_kind="p2p", user_id="manager4521"
    )
    chunks = streamed(handle, 3)
    await start_notifier(platforms.config(card_template_id=TEMPLATE))
    await publish(bus, *chunks)
    await outcomes(bus, "delivered", "dingtalk", 1)
    card = platforms.dingtalk.ai_cards[chunks[0].reply_id]
    assert (card.space_type, card.space_id) == ("IM_ROBOT", "manager4521")
    assert_typed_in_order(card, chunks[-1].text)
    assert [d.channel for d in platforms.dingtalk.deliveries] == ["card-oto"]


async def test_card_updates_never_overtake_each_other_on_a_slow_platform(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # DingTalk has no sequence number: an older update arriving late would overwrite a newer
    # one, even the final text. Every answer takes a while here, chunks keep coming meanwhile.
    platforms.dingtalk.answer_delay_s = 0.3
    chunks = streamed(webhook_handle(platforms, GROUP, chat_kind="group"), 25)
    await start_notifier(platforms.config(card_template_id=TEMPLATE))
    await publish_paced(bus, chunks)
    [delivered] = await outcomes(bus, "delivered", "dingtalk", 1, within_s=30)
    assert delivered.chunk_index == len(chunks) - 1
    assert await outcomes(bus, "ambiguous", "dingtalk", 1, within_s=0.5) == []
    card = platforms.dingtalk.ai_cards[chunks[0].reply_id]
    assert len(platforms.dingtalk.deliveries) == 1  # one card, though chunks came while it was
    assert_typed_in_order(card, chunks[-1].text)
    received = [u.at for u in card.updates]
    # One update in flight at a time: the next one left only after the last one's answer.
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(received))


async def test_an_unknown_card_template_fails_the_reply_with_the_platform_s_code(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    chunks = streamed(webhook_handle(platforms, GROUP, chat_kind="group"), 3)
    await start_notifier(platforms.config(card_template_id="deleted-template.schema"))
    await publish(bus, *chunks)
    [failed] = await outcomes(bus, "failed", "dingtalk", 1)
    assert isinstance(failed, ReplyDeliveryFailed)
    assert (failed.code, failed.chunk_index) == ("param.cardTemplateId", 2)
    assert platforms.dingtalk.ai_cards == {}


async def test_a_chat_no_card_can_be_addressed_to_gets_the_final_text_only(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # An external user's one-to-one chat: no staff id, so no IM_ROBOT space for a card.
    chunks = streamed(webhook_handle(platforms, "cidP2pGuest==", chat_kind="p2p"), 3)
    await start_notifier(platforms.config(card_template_id=TEMPLATE))
    await publish(bus, *chunks)
    await outcomes(bus, "delivered", "dingtalk", 1)
    assert [(d.channel, d.text) for d in platforms.dingtalk.deliveries] == [
        ("session", chunks[-1].text)
    ]
    assert platforms.dingtalk.ai_cards == {}
