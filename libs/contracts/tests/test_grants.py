"""Grant keys: one KV key per (tenant, app, user, role), valid for NATS whatever the platform's
user id holds, and reversible."""

from __future__ import annotations

import re

import pytest

from zhongshu.contracts.grants import ROLES, grant_key, key_token, revoked_key, value_of_token

NATS_KEY = re.compile(r"^[-/_=\.a-zA-Z0-9]+$")


@pytest.mark.parametrize(
    "user",
    [
        "ou_7d8a6e6df7621556ce0d21922b676706ccs",  # a Feishu open_id: kept as is
        "0123456789",  # a DingTalk staff id
        "$:LWCP_v1:$ABCdef+/=",  # a DingTalk sender id with characters keys may not hold
        "manager7.2",  # a dot would split the key's tokens
        "李雷",
    ],
)
def test_a_user_id_becomes_one_valid_key_token_and_back(user: str) -> None:
    token = key_token(user)
    assert NATS_KEY.fullmatch(token)
    assert "." not in token
    assert value_of_token(token) == user
    key = grant_key("acme", "ops-bot", user, "admin")
    assert NATS_KEY.fullmatch(key)
    assert key.split(".") == ["acme", "ops-bot", token, "admin"]


def test_plain_ids_stay_readable_and_roles_are_the_documented_four() -> None:
    assert grant_key("acme", "ops-bot", "ou_x", "viewer") == "acme.ops-bot.ou_x.viewer"
    assert ROLES == ("admin", "operator", "viewer", "user")
    assert revoked_key("3f2ac9") == "3f2ac9"
    assert NATS_KEY.fullmatch(revoked_key("urn:jti:1.2"))
