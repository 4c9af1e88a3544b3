"""The audit trail of what API clients changed: definitions created, replaced or deleted, tasks
cancelled, secrets revealed, as `AuditRecorded` on `audit.<tenant>.api`. Best effort, bounded in
time: the change is already made, and a slow audit must not turn it into an error.

Refused tokens are audited too (`gateway.token.rejected` on `audit._.security`, the actor being
the remote address), for the watchdog to see a burst from one source; at most one record per
source per second, carrying how many refusals it stands for, so a flood cannot flood the bus."""

from __future__ import annotations

import asyncio
import logging
import time

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.ids import new_event_id
from zhongshu.runtime import bus

log = logging.getLogger("zhongshu.gateway.audit")

SOURCE = "zhongshu/gateway"
KIND = "api"
TOKEN_REJECTED = "gateway.token.rejected"
REFUSAL_PERIOD_S = 1.0
MAX_REFUSING_SOURCES = 10_000


class AuditTrail:
    def __init__(self, publisher: bus.Publisher, *, timeout_s: float = 2.0) -> None:
        self._publisher = publisher
        self._timeout_s = timeout_s
        self._refused: dict[str, int] = {}  # source → refusals not audited yet
        self._flushing: set[asyncio.Task[None]] = set()

    def refused(self, remote: str, reason: str) -> None:
        """Count a refused token from ``remote``; the first of a period is audited after the
        period with the period's count (never blocks the request)."""
        source = remote or "unknown"
        if source in self._refused:
            self._refused[source] += 1
            return
        if len(self._refused) >= MAX_REFUSING_SOURCES:
            return  # a flood from this many sources is visible enough
        self._refused[source] = 1
        task = asyncio.create_task(self._flush_later(source, reason))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_later(self, source: str, reason: str) -> None:
        started = time.monotonic()
        await asyncio.sleep(REFUSAL_PERIOD_S)
        count = self._refused.pop(source, 1)
        event = AuditRecorded(
            actor=source,
            action=TOKEN_REJECTED,
            target="api",
            outcome="denied",
            tenant="",
            detail=f"{count} refused bearer token(s) in {time.monotonic() - started:.1f} s; "
            f"first: {reason}",
            labels={"count": str(count), "reason": "invalid token"},
        )
        envelope = wire.make_envelope(event, id=new_event_id(), source=SOURCE, tenant="")
        try:
            await asyncio.wait_for(
                self._publisher.publish(
                    subjects.audit("_", "security"), wire.encode(envelope), msg_id=envelope.id
                ),
                self._timeout_s,
            )
        except Exception as exc:
            log.warning("audit of %d refused token(s) from %s not recorded: %r", count, source, exc)

    async def record(
        self,
        *,
        tenant: str,
        actor: str,
        token: str,
        action: str,
        target: str,
        detail: str = "",
        kind: str = KIND,
    ) -> None:
        event = AuditRecorded(
            actor=actor,
            action=action,
            target=target,
            outcome="succeeded",
            tenant=tenant,
            detail=detail,
            labels={"token": token},
        )
        envelope = wire.make_envelope(event, id=new_event_id(), source=SOURCE, tenant=tenant)
        try:
            await asyncio.wait_for(
                self._publisher.publish(
                    subjects.audit(tenant, kind), wire.encode(envelope), msg_id=envelope.id
                ),
                self._timeout_s,
            )
        except Exception as exc:
            log.warning("audit of %s on %s not recorded: %r", action, target, exc)
