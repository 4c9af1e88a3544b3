"""Deciding whether a Feishu webhook request is genuine, pure: parse, check the signature over
the raw bytes before decrypting, decrypt, check the Verification Token. Every refusal is a
``Rejected`` with the HTTP status to answer; nothing here touches the network or the bus."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from zhongshu.ingress_feishu import crypto
from zhongshu.runtime.ingress import Rejected

URL_VERIFICATION = "url_verification"


@dataclass(frozen=True)
class AppSecrets:
    """One app's webhook secrets (from zhongshu.yaml); either may be unset in the console.
    Left out of the repr so a logged app never shows them."""

    encrypt_key: str | None = field(default=None, repr=False)
    verification_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SignatureHeaders:
    """``X-Lark-Request-Timestamp``, ``X-Lark-Request-Nonce`` and ``X-Lark-Signature``."""

    timestamp: str | None = None
    nonce: str | None = None
    signature: str | None = None


@dataclass(frozen=True)
class Challenge:
    """The url_verification handshake: echo ``challenge`` at once."""

    challenge: str


@dataclass(frozen=True)
class Verified:
    """A genuine request's decrypted JSON body."""

    payload: dict[str, Any]


def open_event_request(
    body: bytes,
    headers: SignatureHeaders,
    secrets: AppSecrets,
    *,
    now: float,
    max_skew_s: float,
) -> Challenge | Verified:
    """An event subscription request (``/events``)."""
    outer = _json_object(body)
    signed = _signed(body, headers, secrets, legacy_card=False, now=now, max_skew_s=max_skew_s)
    payload = _decrypted(outer, secrets)
    if payload.get("type") == URL_VERIFICATION:
        return _challenge(payload, secrets)
    if secrets.encrypt_key and not signed:
        # Feishu signs every push but the challenge once an Encrypt Key is set.
        raise Rejected(401, "missing signature", "X-Lark-Signature headers are missing")
    _check_token(payload, secrets)
    return Verified(payload)


def open_card_request(
    body: bytes,
    headers: SignatureHeaders,
    secrets: AppSecrets,
    *,
    now: float,
    max_skew_s: float,
) -> Challenge | Verified:
    """A card action callback (``/cards``): ``card.action.trigger`` (schema 2.0, signed like
    events) or the older format, signed with SHA-1 over the Verification Token and carrying
    no Verification Token in its body (its ``token`` is the card's update token)."""
    outer = _json_object(body)
    signed = _signed(body, headers, secrets, legacy_card=True, now=now, max_skew_s=max_skew_s)
    payload = _decrypted(outer, secrets)
    if payload.get("type") == URL_VERIFICATION:
        return _challenge(payload, secrets)
    legacy = not isinstance(payload.get("header"), dict)
    if not signed and (secrets.encrypt_key or (legacy and secrets.verification_token)):
        raise Rejected(401, "missing signature", "X-Lark-Signature headers are missing")
    if not legacy:
        _check_token(payload, secrets)
    return Verified(payload)


# msgspec parses a webhook body ~10x faster than the json module.
_JSON = msgspec.json.Decoder()


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = _JSON.decode(raw)
    except (UnicodeDecodeError, ValueError, msgspec.DecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes (`[[[[…`) is not a body.
        raise Rejected(400, "malformed body", "body is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(400, "malformed body", "body is not a JSON object")
    return value


def _signed(
    body: bytes,
    headers: SignatureHeaders,
    secrets: AppSecrets,
    *,
    legacy_card: bool,
    now: float,
    max_skew_s: float,
) -> bool:
    """True when the request carries a signature made with a configured secret; raises when it
    carries a wrong or stale one. Absent headers, or no secret that could have signed them,
    prove nothing (False): the caller decides whether that is acceptable."""
    timestamp, nonce, signature = headers.timestamp, headers.nonce, headers.signature
    if not (timestamp and nonce and signature):
        return False
    expected: list[str] = []
    if secrets.encrypt_key:
        expected.append(crypto.event_signature(timestamp, nonce, secrets.encrypt_key, body))
    if legacy_card and secrets.verification_token:
        expected.append(
            crypto.legacy_card_signature(timestamp, nonce, secrets.verification_token, body)
        )
    if not expected:
        return False
    if not crypto.timestamp_fresh(timestamp, now, max_skew_s):
        raise Rejected(
            401, "stale timestamp", f"X-Lark-Request-Timestamp outside ±{max_skew_s:.0f} s"
        )
    # Compare against every candidate so the time taken does not say which one matched.
    matches = [crypto.same(candidate, signature) for candidate in expected]
    if not any(matches):
        raise Rejected(401, "bad signature", "X-Lark-Signature does not match")
    return True


def _decrypted(outer: dict[str, Any], secrets: AppSecrets) -> dict[str, Any]:
    encrypted = outer.get("encrypt")
    if encrypted is None:
        return outer
    if not isinstance(encrypted, str):
        raise Rejected(400, "malformed body", "encrypt is not a string")
    if not secrets.encrypt_key:
        raise Rejected(400, "cannot decrypt", "encrypted body but no encrypt_key configured")
    try:
        plaintext = crypto.decrypt(secrets.encrypt_key, encrypted)
    except crypto.CryptoError as exc:
        raise Rejected(400, "malformed body", f"cannot decrypt: {exc}") from None
    return _json_object(plaintext)


def _challenge(payload: dict[str, Any], secrets: AppSecrets) -> Challenge:
    challenge = payload.get("challenge")
    if not isinstance(challenge, str):
        raise Rejected(400, "malformed body", "url_verification without a challenge")
    _check_token(payload, secrets)
    return Challenge(challenge)


def _check_token(payload: dict[str, Any], secrets: AppSecrets) -> None:
    if not secrets.verification_token:
        return
    token = crypto.payload_token(payload)
    if token is None:
        raise Rejected(401, "missing token", "no verification token in the payload")
    if not crypto.same(secrets.verification_token, token):
        raise Rejected(401, "bad token", "verification token does not match")
