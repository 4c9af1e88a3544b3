"""The audit trail of what API clients changed: definitions created, replaced or deleted, tasks
cancelled, secrets revealed, as `AuditRecorded` on `audit.<tenant>.api`. Best effort, bounded in
time: the change is already made, and a slow audit must not turn it into an error."""

from __future__ import annotations

import asyncio
import logging

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.ids import new_event_id
from zhongshu.runtime import bus

log = logging.getLogger("zhongshu.gateway.audit")

SOURCE = "zhongshu/gateway"
KIND = "api"


class AuditTrail:
    def __init__(self, publisher: bus.Publisher, *, timeout_s: float = 2.0) -> None:
        self._publisher = publisher
        self._timeout_s = timeout_s

    async def record(
        self, *, tenant: str, actor: str, token: str, action: str, target: str, detail: str = ""
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
                    subjects.audit(tenant, KIND), wire.encode(envelope), msg_id=envelope.id
                ),
                self._timeout_s,
            )
        except Exception as exc:
            log.warning("audit of %s on %s not recorded: %r", action, target, exc)
