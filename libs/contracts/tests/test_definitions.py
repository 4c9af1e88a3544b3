"""Definitions and callback signing: keys are safe, secrets derive, signatures verify."""

from __future__ import annotations

import pytest

from zhongshu.contracts.definitions import (
    definition_key,
    sign_callback,
    subscription_secret,
    verify_callback,
)


def test_definition_keys_refuse_unsafe_tokens() -> None:
    assert definition_key("acme", "daily-report") == "acme.daily-report"
    with pytest.raises(ValueError, match="must match"):
        definition_key("acme", "a.b")
    with pytest.raises(ValueError, match="must match"):
        definition_key("*", "x")


def test_each_subscription_gets_its_own_secret_from_one_key() -> None:
    key = b"hub-callback-key"
    first = subscription_secret(key, "acme", "ops")
    assert first == subscription_secret(key, "acme", "ops")
    assert first != subscription_secret(key, "acme", "ops2")
    assert first != subscription_secret(key, "beta", "ops")
    assert first != subscription_secret(b"other-key", "acme", "ops")


def test_a_signed_callback_verifies_and_a_changed_or_old_one_does_not() -> None:
    secret = subscription_secret(b"k", "acme", "ops")
    body = b'{"id": "evt-1"}'
    signature = sign_callback(secret, 1_700_000_000, body)
    assert verify_callback(secret, 1_700_000_000, body, signature, now=1_700_000_010)
    assert not verify_callback(secret, 1_700_000_000, body + b" ", signature, now=1_700_000_010)
    assert not verify_callback(secret, 1_700_000_000, body, signature, now=1_700_009_999)
    assert not verify_callback("other", 1_700_000_000, body, signature, now=1_700_000_010)
