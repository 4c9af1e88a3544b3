"""The robot callback signature (protocols §2.1 and §5 vector 5)."""

from __future__ import annotations

import pytest

from zhongshu.ingress_dingtalk.signing import SignatureInvalid, callback_sign, verify_callback

VECTOR_TIMESTAMP = "1577262236757"
VECTOR_SECRET = "this is a secret"
VECTOR_SIGN = "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA="
HOUR_MS = 3_600_000


def test_callback_sign_matches_the_official_vector() -> None:
    assert callback_sign(VECTOR_TIMESTAMP, VECTOR_SECRET) == VECTOR_SIGN


def test_the_official_vector_verifies_at_its_own_time() -> None:
    verify_callback(VECTOR_TIMESTAMP, VECTOR_SIGN, VECTOR_SECRET, now_ms=int(VECTOR_TIMESTAMP))


@pytest.mark.parametrize("offset_ms", [-HOUR_MS, HOUR_MS])
def test_a_timestamp_exactly_one_hour_away_is_accepted(offset_ms: int) -> None:
    now = int(VECTOR_TIMESTAMP) + offset_ms
    verify_callback(VECTOR_TIMESTAMP, VECTOR_SIGN, VECTOR_SECRET, now_ms=now)


@pytest.mark.parametrize("offset_ms", [-HOUR_MS - 1, HOUR_MS + 1])
def test_a_timestamp_beyond_one_hour_is_refused(offset_ms: int) -> None:
    now = int(VECTOR_TIMESTAMP) + offset_ms
    with pytest.raises(SignatureInvalid) as refused:
        verify_callback(VECTOR_TIMESTAMP, VECTOR_SIGN, VECTOR_SECRET, now_ms=now)
    assert refused.value.reason == "timestamp outside window"


@pytest.mark.parametrize(
    ("timestamp", "sign", "reason"),
    [
        (None, VECTOR_SIGN, "missing signature"),
        (VECTOR_TIMESTAMP, None, "missing signature"),
        ("", VECTOR_SIGN, "missing signature"),
        ("yesterday", VECTOR_SIGN, "bad timestamp"),
        ("-1577262236757", VECTOR_SIGN, "bad timestamp"),
        # Digits to str.isdigit that int() refuses: a 500 before the signature (fuzzing).
        ("²", VECTOR_SIGN, "bad timestamp"),
        ("１５７７２６２２３６７５７", VECTOR_SIGN, "bad timestamp"),
        (VECTOR_TIMESTAMP, VECTOR_SIGN.replace("D", "E", 1), "bad signature"),
        (VECTOR_TIMESTAMP, callback_sign(VECTOR_TIMESTAMP, "another secret"), "bad signature"),
        (VECTOR_TIMESTAMP, "签名", "bad signature"),
    ],
)
def test_a_missing_malformed_or_wrong_signature_is_refused(
    timestamp: str | None, sign: str | None, reason: str
) -> None:
    with pytest.raises(SignatureInvalid) as refused:
        verify_callback(timestamp, sign, VECTOR_SECRET, now_ms=int(VECTOR_TIMESTAMP))
    assert refused.value.reason == reason
    assert VECTOR_SECRET not in str(refused.value)
