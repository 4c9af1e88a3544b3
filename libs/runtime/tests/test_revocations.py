"""How long a revocation is kept: the token's remaining life and a margin, never less than the
margin, and for ever when the token's expiry is unknown."""

from __future__ import annotations

from zhongshu.contracts.grants import RevokedToken
from zhongshu.runtime.revocations import MIN_TTL_S, ttl_for


def test_a_revocation_outlives_its_token_by_the_margin() -> None:
    now = 1_000_000.0
    assert ttl_for(RevokedToken(jti="a", expires_at=int(now) + 3600), now=now) == 3600 + MIN_TTL_S
    assert ttl_for(RevokedToken(jti="b", expires_at=int(now) - 10), now=now) == MIN_TTL_S
    assert ttl_for(RevokedToken(jti="c"), now=now) is None
