"""Answering a Feishu card action by replacing the clicked card (``PATCH
/im/v1/messages/{id}``), on real NATS and Redis against the fake platform: once, recorded like
any reply, within the platform's rules."""

from __future__ import annotations

import uuid
from typing import Any

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    StartNotifier,
    outcomes,
    publish,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import ReplyDelivered, ReplyDeliveryFailed, ReplyGenerated
from zhongshu.contracts.events.chat import REPLY_HANDLE_FEISHU_CARD_UPDATE, ReplyHandle
from zhongshu.devstack.testing import collect, drained

CHAT = "oc_ops"
SHARED = {"update_multi": True}


def approval_card(state: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "header": {"title": {"tag": "plain_text", "content": "deploy-42"}},
        "elements": [{"tag": "markdown", "content": state}],
    }
    if config is not None:
        card["config"] = config
    return card


def card_update(message_id: str, card: dict[str, Any] | None, **fields: Any) -> ReplyGenerated:
    """What a producer answering a `CardActionReceived` publishes to replace the card."""
    values: dict[str, Any] = {"kind": "card", "card": card, **fields}
    return ReplyGenerated(
        reply_id=f"reply-{uuid.uuid4().hex[:12]}",
        platform="feishu",
        app="lark",
        tenant="acme",
        chat_id=CHAT,
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_CARD_UPDATE, message_id=message_id, chat_id=CHAT
        ),
        **values,
    )


async def test_a_card_reply_to_a_card_action_replaces_the_clicked_card_once(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    clicked = platforms.feishu.bot_card(CHAT, approval_card("waiting", SHARED))
    reply = card_update(clicked, approval_card("approved by Li Lei"))  # no config given
    await start_notifier()
    await publish(bus, reply)
    [delivered] = await outcomes(bus, "delivered", "feishu", 1)
    assert isinstance(delivered, ReplyDelivered)
    assert delivered.platform_message_id == clicked
    [update] = platforms.feishu.updates
    assert update.message_id == clicked
    # Shared before and after: the notifier keeps the card updatable.
    assert update.card == {**approval_card("approved by Li Lei"), "config": SHARED}
    assert platforms.feishu.messages[clicked].content == update.card
    assert platforms.feishu.deliveries == []  # no new message in the chat
    # The producer publishes it again after the duplicate window: the ledger has it.
    env = wire.make_envelope(reply, id=f"{reply.reply_id}:again", source="test", tenant="acme")
    await bus.js.publish(subjects.chat_reply("feishu", "acme"), wire.encode(env))
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert len(platforms.feishu.updates) == 1


async def test_a_card_older_than_14_days_cannot_be_updated_and_the_reply_fails_with_the_code(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    clicked = platforms.feishu.bot_card(CHAT, approval_card("waiting", SHARED), sent_days_ago=15)
    reply = card_update(clicked, approval_card("approved"))
    await start_notifier()
    await publish(bus, reply)
    [failed] = await outcomes(bus, "failed", "feishu", 1)
    assert isinstance(failed, ReplyDeliveryFailed)
    assert failed.code == "230031"
    alerts = await collect(bus.js, subjects.alert("error", "notifier"), count=1)
    assert reply.reply_id in wire.decode_any(alerts[0].data).data.detail
    assert platforms.feishu.updates == []


async def test_a_card_that_is_not_shared_is_refused_before_it_reaches_the_platform(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    clicked = platforms.feishu.bot_card(CHAT, approval_card("waiting", SHARED))
    reply = card_update(clicked, approval_card("approved", {"update_multi": False}))
    await start_notifier()
    await publish(bus, reply)
    [failed] = await outcomes(bus, "failed", "feishu", 1)
    assert failed.code == "update_multi"
    assert platforms.feishu.updates == platforms.feishu.errors == []


async def test_a_text_answer_to_a_card_action_is_threaded_under_the_card(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # Only a card can replace a card.
    clicked = platforms.feishu.bot_card(CHAT, approval_card("waiting", SHARED))
    reply = card_update(clicked, None, kind="text", text="deploying now")
    await start_notifier()
    await publish(bus, reply)
    await outcomes(bus, "delivered", "feishu", 1)
    [sent] = platforms.feishu.deliveries
    assert (sent.kind, sent.parent_id, sent.content) == (
        "reply",
        clicked,
        {"text": "deploying now"},
    )
    assert platforms.feishu.updates == []


async def test_many_updates_of_one_card_stay_within_5_per_second(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    clicked = platforms.feishu.bot_card(CHAT, approval_card("step 0", SHARED))
    replies = [card_update(clicked, approval_card(f"step {i}")) for i in range(1, 13)]
    await start_notifier()
    await publish(bus, *replies)
    delivered = await outcomes(bus, "delivered", "feishu", len(replies), within_s=30)
    assert {d.reply_id for d in delivered} == {r.reply_id for r in replies}
    assert platforms.feishu.errors == []  # no 230020 from the platform
    times = [u.at for u in platforms.feishu.updates]
    assert len(times) == len(replies)
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1.0) <= 5
