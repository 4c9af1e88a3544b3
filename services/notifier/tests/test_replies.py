"""Replies on real NATS and Redis against the fake platforms: each reaches the user once, by
the right path, and its outcome is published."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

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
from zhongshu.contracts.events.chat import (
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    REPLY_HANDLE_FEISHU_MESSAGE,
    ReplyHandle,
)
from zhongshu.devstack.fakes.base_openapi import Injected
from zhongshu.devstack.testing import collect, drained


def dingtalk_reply(handle: ReplyHandle | None, text: str = "pong", **kw: Any) -> ReplyGenerated:
    fields: dict[str, Any] = {"chat_id": "cid-group-1", **kw}
    return ReplyGenerated(
        reply_id=f"reply-{uuid.uuid4().hex[:12]}",
        platform="dingtalk",
        app="ding",
        tenant="acme",
        reply_handle=handle,
        text=text,
        **fields,
    )


def feishu_reply(message_id: str, text: str = "pong", **kw: Any) -> ReplyGenerated:
    return ReplyGenerated(
        reply_id=f"reply-{uuid.uuid4().hex[:12]}",
        platform="feishu",
        app="lark",
        tenant="acme",
        chat_id="oc_chat",
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_MESSAGE, message_id=message_id, chat_id="oc_chat"
        ),
        text=text,
        **kw,
    )


async def test_a_dingtalk_reply_goes_through_the_session_webhook_while_it_is_valid(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    url, expires = platforms.dingtalk.session_webhook("cid-group-1")
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id="cid-group-1",
        expires_at=expires,
    )
    reply = dingtalk_reply(handle, "status: all green")
    await start_notifier()
    await publish(bus, reply)
    [delivered] = await outcomes(bus, "delivered", "dingtalk", 1)
    assert isinstance(delivered, ReplyDelivered)
    assert delivered.reply_id == reply.reply_id
    [sent] = platforms.dingtalk.deliveries
    assert (sent.channel, sent.target, sent.text) == ("session", "cid-group-1", "status: all green")
    assert platforms.dingtalk.token_requests == 0


async def test_an_expired_session_webhook_falls_back_to_the_robot_openapi(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    url, _ = platforms.dingtalk.session_webhook("cid-group-1", expires_in_s=-1)
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id="cid-group-1",
        expires_at=datetime.now(UTC) - timedelta(1),
    )
    first, second = dingtalk_reply(handle, "one"), dingtalk_reply(handle, "two")
    await start_notifier()
    await publish(bus, first, second)
    delivered = await outcomes(bus, "delivered", "dingtalk", 2)
    assert {d.reply_id for d in delivered} == {first.reply_id, second.reply_id}
    sent = platforms.dingtalk.deliveries
    assert {(d.channel, d.target, d.msgtype) for d in sent} == {
        ("group", "cid-group-1", "sampleText")
    }
    assert sorted(d.text for d in sent) == ["one", "two"]
    assert platforms.dingtalk.token_requests == 1  # the access token is cached


async def test_a_feishu_reply_is_threaded_under_the_original_message_with_the_reply_id_as_uuid(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    original = platforms.feishu.user_message("oc_chat")
    reply = feishu_reply(original, "here is /help")
    await start_notifier()
    await publish(bus, reply)
    [delivered] = await outcomes(bus, "delivered", "feishu", 1)
    [sent] = platforms.feishu.deliveries
    assert (sent.kind, sent.parent_id, sent.chat_id) == ("reply", original, "oc_chat")
    assert sent.uuid == reply.reply_id
    assert sent.content == {"text": "here is /help"}
    assert delivered.platform_message_id == sent.message_id


async def test_a_redelivered_reply_is_not_sent_again(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    original = platforms.feishu.user_message("oc_chat")
    reply = feishu_reply(original)
    await start_notifier()
    await publish(bus, reply)
    await outcomes(bus, "delivered", "feishu", 1)
    # The producer publishes it again after the duplicate window (a different msg id).
    env = wire.make_envelope(reply, id=f"{reply.reply_id}:again", source="test", tenant="acme")
    await bus.js.publish(subjects.chat_reply("feishu", "acme"), wire.encode(env))
    await drained(bus.js, streams.REPLIES.name, "notifier-replies")
    delivered = await outcomes(bus, "delivered", "feishu", 2, within_s=1)
    assert len(delivered) == 1  # the same outcome id: JetStream dropped the copy
    assert len(platforms.feishu.deliveries) == 1
    assert platforms.feishu.deduplicated == 0  # not even sent with the same uuid


async def test_a_permanent_refusal_fails_fast_with_the_reason_and_an_alert(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    reply = feishu_reply("om_unknown")  # the fake does not know this message
    await start_notifier()
    await publish(bus, reply)
    [failed] = await outcomes(bus, "failed", "feishu", 1)
    assert isinstance(failed, ReplyDeliveryFailed)
    assert (failed.code, failed.ambiguous) == ("230011", False)
    assert "withdrawn or does not exist" in failed.reason
    alerts = await collect(bus.js, subjects.alert("error", "notifier"), count=1)
    assert reply.reply_id in wire.decode_any(alerts[0].data).data.detail


async def test_dingtalk_text_over_20000_bytes_is_split(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    url, expires = platforms.dingtalk.session_webhook("cid-group-1")
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id="cid-group-1",
        expires_at=expires,
    )
    text = "\n".join(f"第{i}行：" + "长" * 40 for i in range(400))  # ~51 000 bytes
    await start_notifier()
    await publish(bus, dingtalk_reply(handle, text))
    await outcomes(bus, "delivered", "dingtalk", 1)
    parts = [d.text for d in platforms.dingtalk.deliveries]
    assert len(parts) == 3
    assert "".join(parts) == text
    assert all(len(p.encode()) <= 20_000 for p in parts)


async def test_a_streamed_feishu_reply_updates_one_card_in_order_and_ends_with_the_full_text(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    original = platforms.feishu.user_message("oc_chat")
    base = feishu_reply(original, stream_id="s1", final=False)
    words = [f"word{i}" for i in range(30)]
    chunks = [
        msgspec.structs.replace(
            base, text=" ".join(words[: i + 1]), chunk_index=i, final=i == len(words) - 1
        )
        for i in range(len(words))
    ]
    await start_notifier()
    for chunk in chunks:
        await publish(bus, chunk)
        await asyncio.sleep(0.02)  # an LLM's pace, faster than the card may be updated
    [delivered] = await outcomes(bus, "delivered", "feishu", 1)
    assert delivered.chunk_index == len(words) - 1
    [shown] = platforms.feishu.deliveries  # one message, showing the card
    assert (shown.kind, shown.parent_id, shown.uuid) == ("reply", original, base.reply_id)
    assert shown.msg_type == "interactive"
    assert shown.content["type"] == "card"
    # Chunks handled at the same moment may each create a card; only the first one recorded
    # is ever shown (the others are never sent, so nobody sees them).
    card = platforms.feishu.cards[shown.content["data"]["card_id"]]
    assert delivered.platform_message_id == shown.message_id
    assert list(card.elements.values()) == [" ".join(words)]
    assert not card.streaming  # closed after the final text
    assert platforms.feishu.errors == []  # sequences strictly increasing, within limits
    sequences = [seq for _, seq, _ in card.ops]
    assert sequences == sorted(set(sequences))
    updates = [when for when, _, what in card.ops if what == "content"]
    assert len(updates) < len(words)  # throttled: not one update per chunk
    for start in updates:  # at most 5 per second (+ the final, which always goes)
        assert sum(1 for t in updates if start <= t < start + 1.0) <= 6


async def test_only_the_final_chunk_of_a_streamed_dingtalk_reply_is_sent(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    url, expires = platforms.dingtalk.session_webhook("cid-group-1")
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id="cid-group-1",
        expires_at=expires,
    )
    base = dingtalk_reply(handle, stream_id="s1", final=False)
    chunks = [
        msgspec.structs.replace(base, text="He", chunk_index=0),
        msgspec.structs.replace(base, text="Hello", chunk_index=1),
        msgspec.structs.replace(base, text="Hello world", chunk_index=2, final=True),
    ]
    await start_notifier()
    await publish(bus, *chunks)
    [delivered] = await outcomes(bus, "delivered", "dingtalk", 1)
    assert delivered.chunk_index == 2
    assert [d.text for d in platforms.dingtalk.deliveries] == ["Hello world"]


async def test_a_dingtalk_send_without_an_answer_is_ambiguous_and_not_resent(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    url, expires = platforms.dingtalk.session_webhook("cid-group-1")
    handle = ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id="cid-group-1",
        expires_at=expires,
    )
    # The message reaches the chat, the answer never reaches the notifier.
    platforms.dingtalk.inject(Injected(stall_s=3, after_effect=True))
    reply = dingtalk_reply(handle)
    await start_notifier(http_timeout_s=0.5)
    await publish(bus, reply)
    [ambiguous] = await outcomes(bus, "ambiguous", "dingtalk", 1)
    assert isinstance(ambiguous, ReplyDeliveryFailed)
    assert ambiguous.ambiguous
    audit = await collect(bus.js, subjects.audit("acme", "delivery"), count=1)
    assert wire.decode_any(audit[0].data).data.action == "delivery.ambiguous"
    await asyncio.sleep(1)
    assert len(platforms.dingtalk.deliveries) == 1


async def test_a_feishu_send_without_an_answer_is_retried_with_the_same_uuid(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    original = platforms.feishu.user_message("oc_chat")
    platforms.feishu.inject(Injected(stall_s=3, after_effect=True))
    reply = feishu_reply(original)
    await start_notifier(http_timeout_s=0.5)
    await publish(bus, reply)
    [delivered] = await outcomes(bus, "delivered", "feishu", 1)
    assert delivered.attempts == 2
    assert len(platforms.feishu.deliveries) == 1  # the platform dropped the resend by uuid
    assert platforms.feishu.deduplicated == 1


async def test_feishu_rate_limit_answers_are_waited_out_not_failed(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    original = platforms.feishu.user_message("oc_chat")
    platforms.feishu.inject(
        Injected(status=429, body={"code": 99991400, "msg": "request trigger frequency limit"}),
        Injected(status=200, body={"code": 230020, "msg": "frequency limit"}),
    )
    reply = feishu_reply(original)
    await start_notifier()
    await publish(bus, reply)
    [delivered] = await outcomes(bus, "delivered", "feishu", 1)
    assert delivered.attempts == 3
    assert len(platforms.feishu.deliveries) == 1


async def test_a_refused_access_token_is_fetched_again_once_and_the_send_goes_through(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    original = platforms.feishu.user_message("oc_chat")
    expired = dingtalk_reply(None, "after expiry", chat_id="cid-group-2")
    await start_notifier()
    await publish(bus, feishu_reply(original, "one"), dingtalk_reply(None, "one"))
    await outcomes(bus, "delivered", "feishu", 1)
    await outcomes(bus, "delivered", "dingtalk", 1)
    # Both platforms forget the tokens they gave (expired early, revoked).
    platforms.feishu.tokens.clear()
    platforms.dingtalk.tokens.clear()
    await publish(bus, feishu_reply(original, "two"), expired)
    await outcomes(bus, "delivered", "feishu", 2)
    await outcomes(bus, "delivered", "dingtalk", 2)
    assert platforms.feishu.token_requests == platforms.dingtalk.token_requests == 2
    assert [d.content["text"] for d in platforms.feishu.deliveries] == ["one", "two"]
    assert [d.text for d in platforms.dingtalk.deliveries] == ["one", "after expiry"]


async def test_a_dingtalk_reply_to_a_person_uses_the_one_to_one_openapi(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier()
    await publish(bus, dingtalk_reply(None, "hi", chat_id="staff-alice", kind="markdown"))
    await outcomes(bus, "delivered", "dingtalk", 1)
    [sent] = platforms.dingtalk.deliveries
    assert (sent.channel, sent.target, sent.msgtype) == ("oto", "staff-alice", "sampleMarkdown")


def expired_handle(platforms: Platforms, conversation_id: str, **fields: Any) -> ReplyHandle:
    url, _ = platforms.dingtalk.session_webhook(conversation_id, expires_in_s=-1)
    return ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id=conversation_id,
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
        **fields,
    )


async def test_a_one_to_one_answer_after_the_webhook_expired_goes_to_the_user_s_staff_id(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # A one-to-one conversation id starts with "cid" too: only the handle tells them apart.
    handle = expired_handle(platforms, "cidP2pAlice==", chat_kind="p2p", user_id="manager4521")
    group = expired_handle(platforms, "cidNotAGroup==", chat_kind="group")
    one, two = (
        dingtalk_reply(handle, "just you", chat_id="cidP2pAlice=="),
        dingtalk_reply(group, "everyone", chat_id="cidNotAGroup=="),
    )
    await start_notifier()
    await publish(bus, one, two)
    await outcomes(bus, "delivered", "dingtalk", 2)
    sent = {d.text: (d.channel, d.target) for d in platforms.dingtalk.deliveries}
    assert sent == {
        "just you": ("oto", "manager4521"),
        "everyone": ("group", "cidNotAGroup=="),
    }


async def test_a_one_to_one_chat_without_a_staff_id_fails_fast_after_the_webhook_expired(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # An external user has no staff id: no API can reach them, and guessing sends nowhere.
    handle = expired_handle(platforms, "cidP2pGuest==", chat_kind="p2p")
    reply = dingtalk_reply(handle, "hello", chat_id="cidP2pGuest==")
    await start_notifier()
    await publish(bus, reply)
    [failed] = await outcomes(bus, "failed", "dingtalk", 1)
    assert failed.code == "no_route"
    assert "staff id" in failed.reason
    assert platforms.dingtalk.deliveries == []


async def test_readiness_covers_the_bus_and_redis(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    service = await start_notifier()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.health_port}") as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"bus": True, "redis": True}
