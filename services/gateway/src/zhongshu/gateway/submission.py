"""Accepting a task: charge the tenant's daily quota, honour `Idempotency-Key`, publish the
`TaskRequested` (its id is the `Nats-Msg-Id`), and mark it queued in the hot tier.

With a key, an atomic create in the `dedupe` bucket decides which request owns it; its record
holds the exact envelope, so a retry after any failure republishes the same bytes and the same
task id, and a key reused for a different body is refused (IETF idempotency-key draft: 422)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import TaskRequested
from zhongshu.contracts.hotcache import TaskStatus
from zhongshu.contracts.ids import new_event_id
from zhongshu.gateway import metrics
from zhongshu.gateway.adapters.hottier import HotTier
from zhongshu.gateway.adapters.idempotency import IdempotencyRecord, IdempotencyStore
from zhongshu.gateway.adapters.taskbus import SOURCE, TaskBus
from zhongshu.gateway.auth import Principal
from zhongshu.gateway.convert import title_of
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import FlowControl


@dataclass(frozen=True)
class Accepted:
    request: TaskRequested
    at: datetime
    replayed: bool


def fingerprint(operation: str, body: BaseModel) -> str:
    """Same operation and same body (field order aside) → same fingerprint."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


def kind_of(request: TaskRequested) -> str:
    if request.workflow is not None:
        return "workflow"
    return "command" if request.command is not None else "prompt"


class TaskDesk:
    def __init__(
        self, *, flow: FlowControl, keys: IdempotencyStore, bus: TaskBus, hot: HotTier
    ) -> None:
        self._flow = flow
        self._keys = keys
        self._bus = bus
        self._hot = hot

    async def submit(
        self,
        principal: Principal,
        build: Callable[[str], TaskRequested],
        *,
        operation: str,
        body: BaseModel,
        idempotency_key: str | None,
    ) -> Accepted:
        """``build(task_id)`` makes the request once a new task is decided on."""
        tenant = principal.tenant
        digest = fingerprint(operation, body)
        if idempotency_key is not None:
            remembered = await self._keys.get(tenant, idempotency_key)
            if remembered is not None:
                return await self._replay(tenant, idempotency_key, *remembered, digest)
        await self._flow.take_task(tenant)
        task_id = new_event_id()
        envelope = wire.make_envelope(build(task_id), id=task_id, source=SOURCE, tenant=tenant)
        raw = wire.encode(envelope)
        record = IdempotencyRecord(task_id=task_id, fingerprint=digest, envelope=raw)
        revision = 0
        if idempotency_key is not None:
            try:
                claimed = await self._keys.claim(tenant, idempotency_key, record)
            except BaseException:
                await self._flow.give_back_task(tenant)
                raise
            if claimed is None:  # a concurrent request with the same key won
                await self._flow.give_back_task(tenant)
                remembered = await self._keys.get(tenant, idempotency_key)
                if remembered is None:
                    raise ProblemError(
                        409,
                        "a request with this Idempotency-Key is in progress; retry",
                        kind="idempotency-key-in-use",
                    )
                return await self._replay(tenant, idempotency_key, *remembered, digest)
            revision = claimed
        try:
            await self._bus.request(tenant, task_id, raw)
        except BaseException:
            # Not on the bus. Without a key the quota is given back; with one, the key now
            # holds the task and a retry publishes it without charging again.
            if idempotency_key is None:
                await self._flow.give_back_task(tenant)
            raise
        if idempotency_key is not None:
            await self._keys.mark_published(tenant, idempotency_key, record, revision)
        await self._mark_queued(envelope.data, envelope.time)
        metrics.TASKS_ACCEPTED.labels(kind_of(envelope.data)).inc()
        return Accepted(envelope.data, envelope.time, replayed=False)

    async def _replay(
        self, tenant: str, key: str, record: IdempotencyRecord, revision: int, digest: str
    ) -> Accepted:
        if record.fingerprint != digest:
            raise ProblemError(
                422,
                "this Idempotency-Key was used for a different request; use a new key",
                kind="idempotency-key-reused",
                title="Idempotency-Key reused",
            )
        envelope = wire.decode(record.envelope, TaskRequested)
        if not record.published:  # the first attempt failed before (or while) publishing
            await self._bus.request(tenant, record.task_id, record.envelope)
            await self._keys.mark_published(tenant, key, record, revision)
            await self._mark_queued(envelope.data, envelope.time)
        return Accepted(envelope.data, envelope.time, replayed=True)

    async def _mark_queued(self, request: TaskRequested, at: datetime) -> None:
        await self._hot.queued(
            request.tenant,
            TaskStatus(
                task_id=request.task_id,
                status="queued",
                title=title_of(request),
                origin=request.origin,
                requested_by=request.requested_by,
                updated_at=at.timestamp(),
            ),
        )

    async def cancel(self, principal: Principal, task_id: str) -> None:
        await self._bus.cancel(principal.tenant, task_id, by=principal.requested_by)
