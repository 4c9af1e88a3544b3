"""Feishu webhooks, from the raw request to the event we would publish: a signed, encrypted
request (made by the fake platform) whose decrypted JSON is mutated goes through ``domain``
(parse, signature, decrypt, token) and ``normalize``. Property: a ``Rejected`` with a 4xx, or an
event that encodes as a wire envelope; never any other exception."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fuzzlib import Draw, json_input, seed_inputs

from zhongshu.contracts import envelope as wire
from zhongshu.devstack.fakes.feishu import FeishuEventSender, encrypt, sign, sign_legacy_card
from zhongshu.ingress_feishu import domain
from zhongshu.ingress_feishu.normalize import BotIdentity, Context, normalize_card, normalize_event
from zhongshu.runtime.ingress import Rejected

NOW = 1_765_000_000
SECRETS = domain.AppSecrets(encrypt_key="fuzz encrypt key", verification_token="fuzz-vtoken")
CTX = Context("acme-feishu", "acme", BotIdentity(open_id="ou_b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"))
GOLDEN = Path(__file__).parents[2] / "services/ingress-feishu/tests/golden"


def _documents() -> list[dict[str, Any]]:
    fake = FeishuEventSender(
        "http://unused",
        "acme-feishu",
        encrypt_key=SECRETS.encrypt_key,
        verification_token=SECRETS.verification_token,
    )
    made = [
        fake.message("hello"),
        fake.message("look", chat_type="group", mentions=[fake.bot]),
        fake.message(
            message_type="post",
            content={"zh_cn": {"title": "t", "content": [[{"tag": "text", "text": "hi"}]]}},
        ),
        fake.card_action({"action": "ack", "alert": "a-1"}),
        fake.legacy_card_action({"action": "ack"}),
        fake.challenge(),
    ]
    golden = [json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*.payload.json"))]
    for document in golden:  # the golden files carry their own token; ours must verify
        if isinstance(document.get("header"), dict):
            document["header"]["token"] = SECRETS.verification_token
    return made + golden


DOCUMENTS = _documents()
# events encrypted; cards encrypted; cards plain and signed the older way (SHA-1)
SEEDS = [
    *seed_inputs(DOCUMENTS, b"\x00"),
    *seed_inputs(DOCUMENTS, b"\x01"),
    *seed_inputs(DOCUMENTS, b"\x07"),
]


def check(data: bytes) -> None:
    draw = Draw(data)
    how = draw.byte()
    cards, encrypted, legacy = how & 1, not how & 2, bool(how & 4)
    inner = json_input(draw, DOCUMENTS)
    body = json.dumps({"encrypt": encrypt(SECRETS.encrypt_key or "", inner)}).encode()
    if not encrypted:
        body = inner
    stamp, nonce = str(NOW), "fuzz-nonce"
    if cards and legacy:
        signature = sign_legacy_card(stamp, nonce, SECRETS.verification_token or "", body)
    else:
        signature = sign(stamp, nonce, SECRETS.encrypt_key or "", body)
    headers = domain.SignatureHeaders(stamp, nonce, signature)
    opener = domain.open_card_request if cards else domain.open_event_request
    normalize = normalize_card if cards else normalize_event
    try:
        opened = opener(body, headers, SECRETS, now=NOW, max_skew_s=300)
        if isinstance(opened, domain.Challenge):
            return
        result = normalize(opened.payload, CTX)
    except Rejected as rejection:
        if not 400 <= rejection.status < 500:
            raise AssertionError(f"refused with {rejection.status}, not a 4xx") from rejection
        return
    envelope = wire.make_envelope(result.event, id="fuzz", source="fuzz", tenant=CTX.tenant)
    wire.decode_any(wire.encode(envelope))
