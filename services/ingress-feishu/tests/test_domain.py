"""Which webhook requests are genuine (pure: no server, no bus). Requests are built by the fake
Feishu platform in tests/fakes, an implementation independent of the service's."""

from __future__ import annotations

import json
import time

import pytest

from zhongshu.devstack.fakes.feishu import FeishuEventSender
from zhongshu.ingress_feishu.domain import (
    AppSecrets,
    Challenge,
    SignatureHeaders,
    Verified,
    open_card_request,
    open_event_request,
)
from zhongshu.runtime.ingress import Rejected

SECRETS = AppSecrets(encrypt_key="test key", verification_token="vtoken")
SKEW = 8 * 3600


def feishu(secrets: AppSecrets = SECRETS) -> FeishuEventSender:
    return FeishuEventSender(
        "http://unused",
        "acme-feishu",
        encrypt_key=secrets.encrypt_key,
        verification_token=secrets.verification_token,
    )


def headers_of(raw: dict[str, str]) -> SignatureHeaders:
    return SignatureHeaders(
        timestamp=raw.get("X-Lark-Request-Timestamp"),
        nonce=raw.get("X-Lark-Request-Nonce"),
        signature=raw.get("X-Lark-Signature"),
    )


def open_events(
    body: bytes, raw: dict[str, str], secrets: AppSecrets = SECRETS
) -> Challenge | Verified:
    return open_event_request(body, headers_of(raw), secrets, now=time.time(), max_skew_s=SKEW)


def rejected(body: bytes, raw: dict[str, str], secrets: AppSecrets = SECRETS) -> tuple[int, str]:
    with pytest.raises(Rejected) as caught:
        open_events(body, raw, secrets)
    return caught.value.status, caught.value.reason


def test_the_protocol_doc_signature_example_is_accepted_as_a_request() -> None:
    body = b'{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'
    headers = SignatureHeaders(
        "1700000000",
        "nonce-123",
        "52548f4f20dde17246606993fb478dd311c7de7de12dafc34a32996f8430d29b",
    )
    # Signature and decryption pass; "hello world" is not JSON, so the request is malformed
    # (400), not unauthenticated (401).
    with pytest.raises(Rejected) as caught:
        open_event_request(body, headers, SECRETS, now=1700000000, max_skew_s=SKEW)
    assert caught.value.status == 400


def test_an_encrypted_signed_event_is_verified() -> None:
    fake = feishu()
    payload = fake.message(text="hi")
    opened = open_events(*fake.encode(payload))
    assert opened == Verified(payload)


def test_a_plain_event_with_the_right_token_is_verified_without_an_encrypt_key() -> None:
    secrets = AppSecrets(verification_token="vtoken")
    fake = feishu(secrets)
    payload = fake.message(text="hi")
    assert open_events(*fake.encode(payload), secrets) == Verified(payload)


@pytest.mark.parametrize("encrypted", [True, False])
def test_the_challenge_is_answered_without_signature_headers(encrypted: bool) -> None:
    fake = feishu()
    body, raw = fake.encode(fake.challenge("abc"), encrypted=encrypted)
    assert "X-Lark-Signature" not in raw
    assert open_events(body, raw) == Challenge("abc")


def test_a_challenge_with_a_wrong_token_is_refused() -> None:
    body = json.dumps({"challenge": "x", "token": "nope", "type": "url_verification"}).encode()
    assert rejected(body, {}) == (401, "bad token")


def test_a_schema_1_event_checks_its_top_level_token() -> None:
    secrets = AppSecrets(verification_token="vtoken")
    good = {"uuid": "u1", "token": "vtoken", "type": "event_callback", "event": {"type": "x"}}
    assert open_events(json.dumps(good).encode(), {}, secrets) == Verified(good)
    bad = json.dumps({**good, "token": "other"}).encode()
    assert rejected(bad, {}, secrets) == (401, "bad token")


def test_a_tampered_body_fails_the_signature() -> None:
    fake = feishu()
    body, raw = fake.encode(fake.message(text="hi"))
    assert rejected(body.replace(b'"}', b'X"}'), raw) == (401, "bad signature")


def test_an_event_without_signature_headers_is_refused_when_an_encrypt_key_is_set() -> None:
    fake = feishu()
    body, _ = fake.encode(fake.message(text="hi"))
    assert rejected(body, {}) == (401, "missing signature")


def test_a_stale_timestamp_is_refused_even_with_a_valid_signature() -> None:
    fake = feishu()
    body, raw = fake.encode(fake.message(text="hi"), timestamp=int(time.time()) - SKEW - 60)
    assert rejected(body, raw) == (401, "stale timestamp")


def test_a_wrong_verification_token_inside_a_signed_event_is_refused() -> None:
    fake = FeishuEventSender("http://unused", "a", encrypt_key="test key", verification_token="x")
    assert rejected(*fake.encode(fake.message(text="hi"))) == (401, "bad token")


@pytest.mark.parametrize(
    "body",
    # Nested deeper than the parser goes: a RecursionError, so a 500, before the signature.
    [b"", b"not json", b"[1,2]", b'{"encrypt": 5}', b"[" * 100_000, b'{"a":' * 100_000],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    assert rejected(body, {})[0] == 400


def test_the_legacy_card_callback_is_verified_by_its_sha1_signature() -> None:
    secrets = AppSecrets(verification_token="vtoken")
    fake = feishu(secrets)
    payload = fake.legacy_card_action({"approve": "yes"})
    body, raw = fake.encode(payload, legacy_card=True)
    opened = open_card_request(body, headers_of(raw), secrets, now=time.time(), max_skew_s=SKEW)
    assert opened == Verified(payload)
    with pytest.raises(Rejected) as caught:
        open_card_request(body, SignatureHeaders(), secrets, now=time.time(), max_skew_s=SKEW)
    assert caught.value.status == 401


def test_a_v2_card_action_is_verified_like_an_event() -> None:
    fake = feishu()
    payload = fake.card_action({"approve": "yes"})
    body, raw = fake.encode(payload)
    opened = open_card_request(body, headers_of(raw), SECRETS, now=time.time(), max_skew_s=SKEW)
    assert opened == Verified(payload)
