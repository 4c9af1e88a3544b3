"""Normalization is pure: each DingTalk payload becomes one event whose ids a redelivery
repeats. Golden payloads live in ``golden/`` (payload and the expected event side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import (
    MESSAGE_KINDS,
    CardActionReceived,
    MessageReceived,
    PlatformEventReceived,
    ReplyHandle,
    Sender,
)
from zhongshu.contracts.events.chat import REPLY_HANDLE_DINGTALK_ROBOT
from zhongshu.ingress_dingtalk import normalize
from zhongshu.ingress_dingtalk.normalize import MalformedPayload

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_robot_message_normalizes_to_the_golden_event(path: Path) -> None:
    case = load(path)
    inbound = normalize.robot_message(case["payload"], app="acme-dingtalk", tenant="acme")
    expected = case["expected"]
    assert json.loads(msgspec.json.encode(inbound.event)) == expected["event"]
    assert (inbound.event_id, inbound.conversation_id) == (
        expected["envelope_id"],
        expected["conversation_id"],
    )
    assert isinstance(inbound.event, MessageReceived)
    assert inbound.event.message_kind in MESSAGE_KINDS
    # It is a valid wire event: encodes and decodes as a MessageReceived envelope.
    env = wire.make_envelope(inbound.event, id=inbound.event_id, source="t", tenant="acme")
    assert wire.decode(wire.encode(env), MessageReceived).data == inbound.event


def test_every_message_type_has_a_golden_payload() -> None:
    kinds = {load(p)["payload"]["msgtype"] for p in GOLDEN}
    assert kinds >= {"text", "richText", "picture", "file", "audio", "video"}


def test_a_redelivery_gets_the_same_ids_and_other_apps_get_their_own() -> None:
    payload = load(GOLDEN[0])["payload"]
    first = normalize.robot_message(payload, app="a1", tenant="t")
    again = normalize.robot_message(dict(payload), app="a1", tenant="t")
    other = normalize.robot_message(payload, app="a2", tenant="t")
    assert first.event_id == again.event_id
    assert first.event_id != other.event_id


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        ({"msgId": None}, "msgId"),
        ({"msgId": ""}, "msgId"),
        ({"conversationId": None}, "conversationId"),
        ({"senderStaffId": None, "senderId": None}, "senderStaffId"),
    ],
)
def test_a_payload_without_its_ids_is_malformed(change: dict[str, Any], missing: str) -> None:
    payload = {**load(GOLDEN[0])["payload"], **change}
    with pytest.raises(MalformedPayload, match=missing):
        normalize.robot_message(payload, app="a", tenant="t")


@pytest.mark.parametrize(
    ("golden", "chat_kind", "user_id"),
    [
        ("text_p2p", "p2p", "manager4521"),
        ("text_group_at_bot", "group", None),
        # An external sender has no staff id: nothing can address them once the webhook expired.
        ("external_sender_no_webhook", "p2p", None),
    ],
)
def test_the_reply_handle_says_whom_a_one_to_one_answer_goes_to(
    golden: str, chat_kind: str, user_id: str | None
) -> None:
    # Both kinds of chat have `cid…` conversation ids: only these tell the notifier which
    # robot OpenAPI to use after the sessionWebhook expired.
    payload = load(Path(__file__).parent / "golden" / f"{golden}.json")["payload"]
    event = normalize.robot_message(payload, app="a", tenant="t").event
    assert isinstance(event, MessageReceived)
    handle = event.reply_handle
    assert (handle.chat_id or "").startswith("cid")
    assert (handle.chat_kind, handle.user_id) == (chat_kind, user_id)


# Every field read with a type other than the platform's is refused where it is read (found by
# fuzzing; the first, a number in atUsers, was an HTTP 500).
WRONG_TYPES: dict[str, dict[str, Any]] = {
    "atUsers is a number": {"atUsers": 7},
    "atUsers holds a number": {"atUsers": [7]},
    "msgtype is a list": {"msgtype": ["text"]},
    "text is a string": {"msgtype": "text", "text": "hello"},
    "text content is a number": {"msgtype": "text", "text": {"content": 1}},
    "senderNick is a number": {"senderNick": 1},
    "isInAtList is a string": {"isInAtList": "yes"},
    "createAt is a list": {"createAt": [1]},
    "createAt is beyond any date": {"createAt": "1" * 40},
    "sessionWebhook is an object": {"sessionWebhook": {}},
    "content is a number": {"msgtype": "file", "content": 1},
    "content is a string that is not JSON": {"msgtype": "file", "content": "{"},
    "richText is an object": {"msgtype": "richText", "content": {"richText": {}}},
    "a richText part is a string": {"msgtype": "richText", "content": {"richText": ["a"]}},
    "downloadCode is a number": {"msgtype": "picture", "content": {"downloadCode": 1}},
}


@pytest.mark.parametrize("change", WRONG_TYPES.values(), ids=list(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_malformed(change: dict[str, Any]) -> None:
    payload = {**load(GOLDEN[0])["payload"], **change}
    with pytest.raises(MalformedPayload):
        normalize.robot_message(payload, app="a", tenant="t")


@pytest.mark.parametrize(
    "content",
    [
        7,
        '{"cardPrivateData": []}',
        {"cardPrivateData": {"params": 1}},
        {"cardPrivateData": {"actionIds": "a"}},
    ],
)
def test_a_card_callback_with_fields_of_the_wrong_type_is_malformed(content: Any) -> None:
    payload = {"userId": "manager4521", "spaceId": "cid==", "content": content}
    with pytest.raises(MalformedPayload):
        normalize.card_callback(payload, app="a", tenant="t", delivery_id="f")


@pytest.mark.parametrize(
    "raw", [b"{", b"[1, 2]", b"\xff\xfe", b'"text"', b"", b"[" * 100_000, b'{"a":' * 100_000]
)
def test_a_body_that_is_not_a_json_object_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedPayload):
        normalize.parse_json_object(raw)


def test_card_callback_becomes_a_card_action() -> None:
    payload = {
        "extension": "{}",
        "corpId": "ding9f50b15bccd16741",
        "type": "actionCallback",
        "userId": "manager4521",
        "userIdType": 1,
        "spaceType": "IM",
        "spaceId": "cidGroup0Ops==",
        "outTrackId": "reply-42",
        "content": json.dumps(
            {"cardPrivateData": {"actionIds": ["approve"], "params": {"ticket": "T-7"}}}
        ),
    }
    inbound = normalize.card_callback(payload, app="a", tenant="t", delivery_id="frame-1")
    assert inbound.event == CardActionReceived(
        platform="dingtalk",
        app="a",
        tenant="t",
        chat_id="cidGroup0Ops==",
        user=Sender(id="manager4521", staff_id="manager4521"),
        action={"ticket": "T-7"},
        platform_event_id="frame-1",
        reply_handle=ReplyHandle(kind=REPLY_HANDLE_DINGTALK_ROBOT, chat_id="cidGroup0Ops=="),
        action_name="approve",
        card_id="reply-42",
    )
    assert inbound.event_id == "dingtalk:a:frame-1"


def test_any_other_event_is_kept_whole() -> None:
    headers = {
        "messageId": "m-1",
        "topic": "chat_update_title",
        "eventId": "ev-9",
        "eventType": "chat_update_title",
        "eventBornTime": "1700000000000",
    }
    payload = {"ChatId": "chat-1", "title": "新名字"}
    inbound = normalize.platform_event(headers, payload, app="a", tenant="t")
    assert isinstance(inbound.event, PlatformEventReceived)
    assert (inbound.event.event_type, inbound.event.platform_event_id) == (
        "chat_update_title",
        "ev-9",
    )
    assert inbound.event.payload == payload
    assert inbound.occurred_at is not None
    assert inbound.occurred_at.year == 2023
    assert inbound.event_id == normalize.event_id("a", "ev-9")
