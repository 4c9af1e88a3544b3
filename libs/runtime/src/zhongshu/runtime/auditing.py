"""Recording a security-relevant action as an `AuditRecorded` on `audit.<tenant>.<kind>`, for
the operator commands and services that have no audit adapter of their own: `zhongshu config
push`, `dlq replay`, `token create`, `archive restore`, and the watchdog's alert actions.

Best effort and bounded in time: the action is already done, and a slow or refused audit must not
turn it into an error; a failure is logged (and returned, for a CLI to say so)."""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
from collections.abc import Mapping

from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.events.audit import OUTCOME_SUCCEEDED
from zhongshu.contracts.ids import new_event_id
from zhongshu.runtime import bus

log = logging.getLogger("zhongshu.runtime.auditing")

HUB_TENANT = "_"
"""The tenant of actions on the whole hub (a config push, a DLQ replay, a restore)."""
TIMEOUT_S = 5.0


def operator() -> str:
    """Who runs this command: the OS user at this host."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def message(
    *,
    source: str,
    actor: str,
    action: str,
    target: str,
    kind: str,
    tenant: str = HUB_TENANT,
    outcome: str = OUTCOME_SUCCEEDED,
    detail: str = "",
    labels: Mapping[str, str] | None = None,
    event_id: str | None = None,
) -> tuple[str, bytes, str]:
    """The subject, the encoded envelope and its id (the `Nats-Msg-Id`)."""
    event = AuditRecorded(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        tenant=tenant,
        detail=detail,
        labels=dict(labels or {}),
    )
    envelope = wire.make_envelope(
        event, id=event_id or new_event_id(), source=source, tenant=tenant
    )
    return subjects.audit(tenant, kind), wire.encode(envelope), envelope.id


async def record(
    publisher: bus.Publisher | JetStreamContext,
    *,
    source: str,
    actor: str,
    action: str,
    target: str,
    kind: str,
    tenant: str = HUB_TENANT,
    outcome: str = OUTCOME_SUCCEEDED,
    detail: str = "",
    labels: Mapping[str, str] | None = None,
    event_id: str | None = None,
    timeout_s: float = TIMEOUT_S,
) -> str | None:
    """Publish the record; None when stored, else why not."""
    subject, data, msg_id = message(
        source=source, actor=actor, action=action, target=target, kind=kind, tenant=tenant,
        outcome=outcome, detail=detail, labels=labels, event_id=event_id,
    )  # fmt: skip
    if isinstance(publisher, JetStreamContext):
        publisher = bus.Publisher(publisher)
    try:
        await asyncio.wait_for(publisher.publish(subject, data, msg_id=msg_id), timeout_s)
    except Exception as exc:
        log.warning("audit of %s on %s not recorded: %r", action, target, exc)
        return f"{type(exc).__name__}: {exc}"
    return None


async def record_at(
    nats_url: str,
    *,
    client_name: str,
    source: str,
    actor: str,
    action: str,
    target: str,
    kind: str,
    tenant: str = HUB_TENANT,
    outcome: str = OUTCOME_SUCCEEDED,
    detail: str = "",
    labels: Mapping[str, str] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> str | None:
    """``record`` over a connection of its own (a command that does not use the bus otherwise)."""
    try:
        nc = await bus.connect(nats_url, name=client_name, timeout_s=timeout_s)
    except Exception as exc:
        log.warning("audit of %s on %s not recorded: %r", action, target, exc)
        return f"{type(exc).__name__}: {exc}"
    try:
        return await record(
            bus.jetstream(nc), source=source, actor=actor, action=action, target=target,
            kind=kind, tenant=tenant, outcome=outcome, detail=detail, labels=labels,
            timeout_s=timeout_s,
        )  # fmt: skip
    finally:
        await nc.close()
