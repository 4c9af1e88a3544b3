"""What the delivery ledger costs: each write to ``delivery_state`` is an fsynced JetStream
write, so a reply claims its send by creating its record as ``sending`` (no ``pending`` write
first), and a streamed answer's final outcome goes into its card's record."""

from __future__ import annotations

import msgspec

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    StartNotifier,
    outcomes,
    publish,
)
from zhongshu.contracts import streams
from zhongshu.contracts.events import ReplyGenerated
from zhongshu.contracts.events.chat import REPLY_HANDLE_FEISHU_MESSAGE, ReplyHandle
from zhongshu.devstack.testing import drained


async def ledger_writes(bus: Bus) -> int:
    info = await bus.js.stream_info(f"KV_{streams.DELIVERY_STATE_KV.bucket}")
    return int(info.state.last_seq)


def feishu_reply(platforms: Platforms, **fields: object) -> ReplyGenerated:
    original = platforms.feishu.user_message("oc_chat")
    return ReplyGenerated(
        reply_id="reply-writes",
        platform="feishu",
        app="lark",
        tenant="acme",
        chat_id="oc_chat",
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_MESSAGE, message_id=original, chat_id="oc_chat"
        ),
        text="hello",
        **fields,  # type: ignore[arg-type]
    )


async def test_a_plain_reply_costs_two_ledger_writes_sending_then_delivered(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier()
    await publish(bus, feishu_reply(platforms))
    await outcomes(bus, "delivered", "feishu", 1)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert await ledger_writes(bus) == 2
    assert len(platforms.feishu.deliveries) == 1


async def test_a_streamed_answer_costs_two_ledger_writes_when_its_final_chunk_waits_for_the_card(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # The card's record: created as sending with the card id before the card is shown, then
    # delivered with the final text. The final chunk arrives while the first one shows the
    # card (slow to answer): the first leaves the record to it, and the final outcome goes
    # into the card's record, not into one of its own.
    platforms.feishu.answer_delay_s = 0.2
    base = feishu_reply(platforms, stream_id="s", final=False)
    first = msgspec.structs.replace(base, text="hel", chunk_index=1)
    final = msgspec.structs.replace(base, chunk_index=1_000_000_000, final=True)
    await start_notifier()
    await publish(bus, first, final)
    await outcomes(bus, "delivered", "feishu", 1)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert await ledger_writes(bus) == 2
    [card] = platforms.feishu.cards.values()
    assert list(card.elements.values()) == ["hello"]
    assert not card.streaming
    assert len(platforms.feishu.deliveries) == 1


async def test_a_final_chunk_that_shows_the_card_itself_costs_two_ledger_writes(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    final = feishu_reply(platforms, stream_id="s", final=True, chunk_index=1_000_000_000)
    await start_notifier()
    await publish(bus, final)
    await outcomes(bus, "delivered", "feishu", 1)
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    assert await ledger_writes(bus) == 2
    [card] = platforms.feishu.cards.values()
    assert list(card.elements.values()) == ["hello"]
    assert not card.streaming
