"""Every kind of Feishu payload normalizes to the expected event (golden files: a realistic
``<case>.payload.json`` and the ``<case>.expected.json`` it must become). Regenerate the
expected files after a deliberate change with ``ZHONGSHU_REGOLD=1`` and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from zhongshu.contracts.events import CardActionReceived, MessageReceived
from zhongshu.ingress_feishu.normalize import (
    BotIdentity,
    Context,
    normalize_card,
    normalize_event,
)
from zhongshu.runtime.ingress import Rejected

GOLDEN = Path(__file__).parent / "golden"
BOT_OPEN_ID = "ou_b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"
CTX = Context("acme-feishu", "acme", BotIdentity(open_id=BOT_OPEN_ID))
CASES = sorted(p.name.removesuffix(".payload.json") for p in GOLDEN.glob("*.payload.json"))


def normalized(case: str, ctx: Context = CTX) -> dict[str, Any]:
    payload = json.loads((GOLDEN / f"{case}.payload.json").read_text())
    normalize = normalize_card if case.startswith("card_") else normalize_event
    result = normalize(payload, ctx)
    return {
        "type": type(result.event).TYPE,
        "unique_id": result.unique_id,
        "conversation_id": result.conversation_id,
        "event": json.loads(msgspec.json.encode(result.event)),
    }


@pytest.mark.parametrize("case", CASES)
def test_payload_normalizes_to_its_golden_event(case: str) -> None:
    expected_file = GOLDEN / f"{case}.expected.json"
    actual = normalized(case)
    if os.environ.get("ZHONGSHU_REGOLD"):
        expected_file.write_text(json.dumps(actual, ensure_ascii=False, indent=2) + "\n")
    assert actual == json.loads(expected_file.read_text())


def test_every_message_type_users_send_has_a_golden_case() -> None:
    payloads = (json.loads((GOLDEN / f"{case}.payload.json").read_text()) for case in CASES)
    kinds = {
        p["event"]["message"]["message_type"] for p in payloads if "message" in p.get("event", {})
    }
    users_send = {"text", "post", "image", "file", "audio", "media", "interactive", "merge_forward"}
    assert users_send <= kinds


def test_without_a_bot_open_id_the_bot_is_recognised_by_its_name() -> None:
    by_name = Context("acme-feishu", "acme", BotIdentity(name="Acme Bot"))
    event = normalized("text_group_mentions_bot", by_name)["event"]
    assert event["mentions_bot"] is True
    assert event["text"] == "/summarize 3d for @Han Meimei please"


def test_a_mention_of_another_user_is_not_a_mention_of_the_bot() -> None:
    other_bot = Context("acme-feishu", "acme", BotIdentity(open_id="ou_someone_else"))
    event = normalized("text_group_mentions_bot", other_bot)["event"]
    assert "mentions_bot" not in event  # omitted when False
    assert event["text"] == "@Acme Bot /summarize 3d for @Han Meimei please"


def test_a_message_without_its_ids_is_malformed() -> None:
    payload = json.loads((GOLDEN / "text_p2p.payload.json").read_text())
    del payload["event"]["message"]["message_id"]
    with pytest.raises(Rejected) as caught:
        normalize_event(payload, CTX)
    assert caught.value.status == 400


def _message(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((GOLDEN / "text_p2p.payload.json").read_text())
    payload["event"]["message"].update(changes)
    return payload


def _post(content: Any) -> dict[str, Any]:
    return _message(message_type="post", content=json.dumps({"content": content}))


# Each field read with a type other than the platform's is refused where it is read, with a 400
# (found by fuzzing: a number where a post's paragraphs belong was an exception, so a 500).
WRONG_TYPES: dict[str, dict[str, Any]] = {
    "post paragraphs are a number": _post(1.5),
    "a post paragraph is a string": _post(["hi"]),
    "a post element is a number": _post([[1]]),
    "content is a number": _message(content=7),
    "content is JSON but not an object": _message(content="[1]"),
    "content is nested deeper than a parser goes": _message(content="[" * 100_000),
    "mentions is an object": _message(mentions={}),
    "a mention is a string": _message(mentions=["@_user_1"]),
    "chat_id is a number": _message(chat_id=5),
    "message_type is a list": _message(message_type=["text"]),
    "create_time is not a number": _message(create_time="yesterday"),
    "create_time is beyond any date": _message(create_time="9" * 40),
    "header is a list": {"schema": "2.0", "header": [], "event": {}},
    "event is a string": {**_message(), "event": "message"},
}


@pytest.mark.parametrize("payload", WRONG_TYPES.values(), ids=list(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_a_400(payload: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as caught:
        normalize_event(payload, CTX)
    assert caught.value.status == 400


def test_a_card_action_whose_option_is_a_number_is_a_400() -> None:
    payload = json.loads((GOLDEN / "card_action_trigger.payload.json").read_text())
    payload["event"]["action"]["option"] = 3
    with pytest.raises(Rejected) as caught:
        normalize_card(payload, CTX)
    assert caught.value.status == 400


def test_text_in_a_card_nested_past_any_real_card_is_not_followed() -> None:
    deep = '{"elements": [' * 300 + '{"text": "found"}' + "]}" * 300
    result = normalize_event(_message(message_type="interactive", content=deep), CTX)
    assert isinstance(result.event, MessageReceived)
    assert result.event.text == ""


def test_an_unknown_event_type_is_kept_whole_not_refused() -> None:
    payload = {
        "schema": "2.0",
        "header": {"event_id": "e1", "event_type": "brand.new.event_v9", "token": "t"},
        "event": {"anything": [1, 2, 3]},
    }
    result = normalize_event(payload, CTX)
    assert result.event.TYPE == "zhongshu.chat.platform_event_received.v1"
    assert msgspec.to_builtins(result.event)["payload"] == {"anything": [1, 2, 3]}
    assert result.unique_id == "e1"


def test_messages_and_card_actions_are_the_contract_types() -> None:
    assert normalized("text_p2p")["type"] == MessageReceived.TYPE
    assert normalized("card_legacy")["type"] == CardActionReceived.TYPE
