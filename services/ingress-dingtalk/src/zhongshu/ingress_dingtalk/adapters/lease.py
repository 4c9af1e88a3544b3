"""A lease in the NATS KV bucket ``leases`` (TTL 15 s): create = acquire, update on the last
revision = renew, a failed renew = lost. With several replicas, only the holder does the work
(one DingTalk Stream connection per app), and a standby takes over once the holder's key
expires."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from nats.js.kv import KeyValue

log = logging.getLogger("zhongshu.ingress_dingtalk.lease")


def owner_id() -> str:
    """Who holds a lease: readable in `nats kv get`, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, kv: KeyValue, key: str, owner: str | None = None) -> None:
        self.kv, self.key, self.owner = kv, key, owner or owner_id()
        self.revision: int | None = None

    @property
    def held(self) -> bool:
        return self.revision is not None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (its key is absent, deleted or expired)."""
        try:
            self.revision = await self.kv.create(self.key, self.owner.encode())
        except Exception as exc:  # held by another replica, or the bus is unreachable
            log.debug("lease %s not acquired: %r", self.key, exc)
            self.revision = None
        return self.held

    async def renew(self) -> bool:
        """Extend the lease; False (and no longer held) when another replica took it or the
        bus did not answer: the caller must stop the work at once."""
        if self.revision is None:
            return False
        try:
            self.revision = await self.kv.update(self.key, self.owner.encode(), last=self.revision)
        except Exception as exc:
            log.warning("lease %s lost: %r", self.key, exc)
            self.revision = None
        return self.held

    async def release(self) -> None:
        """Hand the lease over at once (a clean shutdown), instead of letting it expire."""
        if self.revision is None:
            return
        revision, self.revision = self.revision, None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kv.delete(self.key, last=revision), 2.0)


async def run_while_holding(
    lease: Lease,
    work: Callable[[], Awaitable[None]],
    *,
    renew_every_s: float,
    retry_every_s: float,
    on_acquired: Callable[[], None] | None = None,
) -> None:
    """Forever: wait for the lease, then run ``work`` while renewing it; cancel ``work`` as soon
    as a renewal fails and go back to waiting. Cancelling this releases the lease only through
    the caller (``lease.release()``), so a crash lets it lapse after the bucket's TTL."""
    while True:
        if not await lease.acquire():
            await asyncio.sleep(retry_every_s)
            continue
        log.info("lease %s acquired by %s", lease.key, lease.owner)
        if on_acquired is not None:
            on_acquired()
        task = asyncio.ensure_future(work())
        try:
            while True:
                await asyncio.wait({task}, timeout=renew_every_s)
                if task.done():
                    if not task.cancelled() and task.exception() is not None:
                        log.error("leased work for %s failed", lease.key, exc_info=task.exception())
                    await lease.release()
                    break
                if not await lease.renew():
                    break
        finally:
            task.cancel()
            await asyncio.wait({task})
        await asyncio.sleep(retry_every_s)
