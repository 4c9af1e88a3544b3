"""DingTalk robot callbacks and Stream frames, from the signed request to the event we would
publish: the signature headers (made like the fake platform's, sometimes mutated) go through
``verify_callback``, the mutated body through ``parse_json_object`` and ``normalize``.
Property: ``SignatureInvalid`` or ``MalformedPayload`` (each a 4xx), or an event that encodes as a
wire envelope; never any other exception (a number in ``atUsers`` was a 500)."""

from __future__ import annotations

import json
from typing import Any

from fuzzlib import Draw, json_input, seed_inputs

from zhongshu.contracts import envelope as wire
from zhongshu.devstack.fakes.dingtalk import bot_message, sign
from zhongshu.ingress_dingtalk import normalize
from zhongshu.ingress_dingtalk.normalize import MalformedPayload
from zhongshu.ingress_dingtalk.signing import SignatureInvalid, verify_callback

NOW_MS = 1_765_000_000_000
SECRET = "fuzz-app-secret"


def _documents() -> list[dict[str, Any]]:
    card = {
        "userId": "manager4521",
        "spaceId": "cidGroup0Ops==",
        "outTrackId": "reply-42",
        "content": json.dumps(
            {"cardPrivateData": {"actionIds": ["approve"], "params": {"ticket": "T-7"}}}
        ),
    }
    return [
        bot_message(text="hello", create_at=NOW_MS),
        bot_message(text="hi", conversation_type="2", at_users=["s1"], at_bot=True),
        bot_message(
            msgtype="richText", content={"richText": [{"text": "a"}, {"downloadCode": "d"}]}
        ),
        bot_message(msgtype="audio", content={"downloadCode": "d", "recognition": "words"}),
        bot_message(msgtype="file", content={"downloadCode": "d", "fileName": "a.pdf"}),
        card,
    ]


DOCUMENTS = _documents()
# as a robot callback, a card callback and a Stream event
SEEDS = [
    *seed_inputs(DOCUMENTS, b"\x00"),
    *seed_inputs(DOCUMENTS, b"\x01"),
    *seed_inputs(DOCUMENTS, b"\x02"),
]
_HEADERS = ("", "0", "-1", "1e3", "abc", "９９", "²", str(NOW_MS + 3_600_000), "\x00")


def check(data: bytes) -> None:
    draw = Draw(data)
    how = draw.byte()
    stamp = str(NOW_MS) if how & 8 == 0 else draw.pick(_HEADERS) + draw.text()
    signature = sign(stamp, SECRET) if how & 16 == 0 else draw.text()
    body = json_input(draw, DOCUMENTS)
    try:
        verify_callback(stamp, signature, SECRET, max_skew_ms=3_600_000, now_ms=NOW_MS)
        payload = normalize.parse_json_object(body)
        match how % 3:
            case 0:
                inbound = normalize.robot_message(payload, app="a", tenant="t")
            case 1:
                inbound = normalize.card_callback(payload, app="a", tenant="t", delivery_id="f-1")
            case _:
                headers = {"messageId": "m-1", "eventType": "chat_update", "eventBornTime": stamp}
                inbound = normalize.platform_event(headers, payload, app="a", tenant="t")
    except (SignatureInvalid, MalformedPayload):
        return
    envelope = wire.make_envelope(inbound.event, id=inbound.event_id, source="fuzz", tenant="t")
    wire.decode_any(wire.encode(envelope))
