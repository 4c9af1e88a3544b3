"""Revoked API tokens, in the `revoked_tokens` bucket under their `jti`: the gateway holds them in
memory through a watch (a revoked token is refused with no I/O per request), and the CLI and the
API write them, each key living only as long as the token would have."""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.contracts.grants import REVOKED_DECODER, RevokedToken, revoked_key
from zhongshu.contracts.streams import REVOKED_TOKENS_KV
from zhongshu.runtime.buckets import WatchedBucket

MIN_TTL_S = 60.0
"""A revocation outlives the token's `exp` by this much at least (the verifier's leeway)."""


class RevokedTokens:
    """The revoked `jti`s as the bucket holds them now. An entry that expired with its token may
    stay in memory until the watch restarts: harmless, the token's `exp` refuses it anyway."""

    def __init__(self, watched: WatchedBucket[RevokedToken]) -> None:
        self.watched = watched

    @classmethod
    def watching(cls, js: JetStreamContext) -> RevokedTokens:
        return cls(WatchedBucket(js, REVOKED_TOKENS_KV.bucket, REVOKED_DECODER.decode))

    def __contains__(self, jti: object) -> bool:
        return isinstance(jti, str) and bool(jti) and revoked_key(jti) in self.watched

    async def applied(self, revision: int, within_s: float = 2.0) -> bool:
        """Wait until the watch has applied ``revision`` (a revocation this process wrote), at
        most ``within_s``; whether it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self.watched.revision < revision:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True


def ttl_for(record: RevokedToken, *, now: float | None = None) -> float | None:
    """How long to keep ``record``: the token's remaining life plus a margin; None (for ever)
    when its expiry is unknown."""
    if not record.expires_at:
        return None
    remaining = record.expires_at - (time.time() if now is None else now)
    return max(MIN_TTL_S, remaining + MIN_TTL_S)


async def revoke(kv: KeyValue, record: RevokedToken) -> int | None:
    """Store the revocation in ``kv`` (the `revoked_tokens` bucket): its revision, or None when
    the jti was already revoked."""
    try:
        return await kv.create(
            revoked_key(record.jti), msgspec.json.encode(record), msg_ttl=ttl_for(record)
        )
    except KeyWrongLastSequenceError:
        return None
