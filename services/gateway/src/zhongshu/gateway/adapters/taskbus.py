"""Puts task requests and cancellations on the bus (TASKS): `task.requested.<tenant>` with the
task id as `Nats-Msg-Id`, so a retried publish is stored once."""

from __future__ import annotations

import logging

import nats.errors

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import TaskFailed
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.gateway.adapters import Unavailable
from zhongshu.runtime import bus

log = logging.getLogger("zhongshu.gateway.taskbus")

SOURCE = "zhongshu/gateway"
CANCELLED = "cancelled"
"""`TaskFailed.error_code` of a task cancelled through the API."""


class TaskBus:
    def __init__(self, publisher: bus.Publisher, *, timeout_s: float) -> None:
        self._publisher = publisher
        self._timeout_s = timeout_s

    async def request(self, tenant: str, task_id: str, envelope: bytes) -> bool:
        """Publish an encoded `TaskRequested` envelope; False when JetStream already had it
        (a replay inside the duplicate window)."""
        try:
            ack = await self._publisher.publish(
                subjects.task_requested(tenant),
                envelope,
                msg_id=task_id,
                timeout_s=self._timeout_s,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("task %s not published: %r", task_id, exc)
            raise Unavailable("the bus (NATS) did not store the task request") from None
        return not ack.duplicate

    async def cancel(self, tenant: str, task_id: str, *, by: str) -> None:
        """Record the cancellation in the task's own lifecycle: a final `TaskFailed` with
        `error_code: cancelled`, which read models show as the task's end."""
        event = TaskFailed(
            task_id=task_id,
            reason=f"cancelled by {by}",
            error_code=CANCELLED,
            retryable=False,
        )
        msg_id = derive_msg_id(task_id, "cancel")
        env = wire.make_envelope(event, id=msg_id, source=SOURCE, tenant=tenant)
        try:
            await self._publisher.publish(
                subjects.task_event(tenant, task_id),
                wire.encode(env),
                msg_id=msg_id,
                timeout_s=self._timeout_s,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cancellation of task %s not published: %r", task_id, exc)
            raise Unavailable("the bus (NATS) did not store the cancellation") from None
