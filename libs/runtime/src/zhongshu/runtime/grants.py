"""Roles granted to chat users, in the `grants` bucket: :class:`GrantBook` reads them live from a
watched copy in memory (the router's and the ingress's access checks cost no I/O), and
:class:`GrantStore` writes them (the gateway's API, the router's chat admin commands)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from zhongshu.contracts.grants import (
    GRANT_DECODER,
    ROLES,
    Grant,
    grant_key,
    grants_of_tenant,
)
from zhongshu.contracts.streams import GRANTS_KV
from zhongshu.runtime.buckets import WatchedBucket
from zhongshu.runtime.errors import RuntimeFailure

log = logging.getLogger("zhongshu.runtime.grants")

READY_TIMEOUT_S = 10.0


class GrantBook:
    """The grants as the bucket holds them now (empty until its watch has read it)."""

    def __init__(self, watched: WatchedBucket[Grant]) -> None:
        self.watched = watched

    @classmethod
    def watching(cls, js: JetStreamContext) -> GrantBook:
        """A book over the `grants` bucket; start it with ``book.watched.start()``."""
        return cls(WatchedBucket(js, GRANTS_KV.bucket, GRANT_DECODER.decode))

    def roles(self, tenant: str, app: str, user_ids: Iterable[str]) -> frozenset[str]:
        """The roles any of ``user_ids`` (one user's ids on its platform) holds in ``app``: a
        few dictionary look-ups, no scan."""
        held = self.watched
        return frozenset(
            role
            for user in user_ids
            if user
            for role in ROLES
            if grant_key(tenant, app, user, role) in held
        )

    def of_user(self, tenant: str, app: str, user_ids: Iterable[str]) -> list[Grant]:
        held = self.watched
        found = (held.get(grant_key(tenant, app, u, r)) for u in user_ids if u for r in ROLES)
        return [g for g in found if g is not None]


@dataclass(frozen=True)
class Changed:
    grant: Grant
    changed: bool
    """False when the grant already existed (granting) or did not exist (revoking)."""


class GrantStore:
    """Writes grants; a grant is a put of its own key and a revocation its delete, so two
    admins changing different grants never conflict."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, tenant: str, app: str, user: str, role: str) -> Grant | None:
        try:
            entry = await self._kv.get(grant_key(tenant, app, user, role))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return GRANT_DECODER.decode(entry.value) if entry.value else None

    async def grant(self, grant: Grant) -> Changed:
        existing = await self.get(grant.tenant, grant.app, grant.user, grant.role)
        if existing is not None:
            return Changed(existing, False)
        key = grant_key(grant.tenant, grant.app, grant.user, grant.role)
        await self._kv.put(key, msgspec.json.encode(grant))
        return Changed(grant, True)

    async def revoke(self, tenant: str, app: str, user: str, role: str) -> Changed:
        existing = await self.get(tenant, app, user, role)
        if existing is None:
            return Changed(Grant(tenant=tenant, app=app, user=user, role=role), False)
        await self._kv.delete(grant_key(tenant, app, user, role))
        return Changed(existing, True)

    async def list(self, tenant: str) -> list[tuple[str, Grant]]:
        """Every grant of ``tenant`` with its key, sorted by key (app, user, role)."""
        found: list[tuple[str, Grant]] = []
        watcher = await self._kv.watch(
            grants_of_tenant(tenant), ignore_deletes=True, inactive_threshold=10.0
        )
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    found.append((entry.key, GRANT_DECODER.decode(entry.value)))
                if not entry.delta:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(found, key=lambda kv: kv[0])


async def open_grants(stack: AsyncExitStack, js: JetStreamContext) -> tuple[GrantBook, GrantStore]:
    """The live book (its first read done, or logged as late) and the store over the `grants`
    bucket, the watch stopped with ``stack``; a missing bucket fails the start."""
    try:
        kv = await js.key_value(GRANTS_KV.bucket)
    except BucketNotFoundError:
        raise RuntimeFailure(
            f"KV bucket {GRANTS_KV.bucket!r} is missing; run `zhongshu provision`"
        ) from None
    book = GrantBook.watching(js)
    book.watched.start()
    stack.push_async_callback(book.watched.stop)
    if not await book.watched.wait_ready(READY_TIMEOUT_S):
        log.warning(
            "grants not read within %.0f s; only the whitelist decides until then", READY_TIMEOUT_S
        )
    return book, GrantStore(kv)
