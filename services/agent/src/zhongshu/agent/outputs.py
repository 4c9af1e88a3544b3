"""What one run publishes through its outbox (``runtime.outbox``): the task's lifecycle (events
and hot status) and its replies.

Every id is derived from the input's id, so a run repeated after a crash or redelivery
publishes the same ids (dropped by JetStream within its window, and by the notifier's ledger
after it); only the streamed chunks of a repeated run differ, and they are cosmetic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zhongshu.agent import domain
from zhongshu.agent.adapters.taskstatus import TaskStatusStore
from zhongshu.contracts import subjects
from zhongshu.contracts.events import (
    Event,
    Platform,
    ReplyGenerated,
    ReplyHandle,
    TaskCompleted,
    TaskFailed,
    TaskOrigin,
    TaskProgressed,
    TaskStarted,
    TaskToolCalled,
)
from zhongshu.contracts.hotcache import TaskState, TaskStatus
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.runtime.outbox import Outbox

SOURCE = "zhongshu/agent"


@dataclass(frozen=True)
class ChatTarget:
    """Where an answer goes: a chat, answered in place when there is a reply handle."""

    platform: Platform
    app: str
    tenant: str
    chat_id: str
    reply_handle: ReplyHandle | None = None
    in_reply_to: str | None = None

    def reply(self, reply_id: str, text: str, **fields: Any) -> ReplyGenerated:
        return ReplyGenerated(
            reply_id=reply_id,
            platform=self.platform,
            app=self.app,
            tenant=self.tenant,
            chat_id=self.chat_id,
            in_reply_to=self.in_reply_to,
            reply_handle=self.reply_handle,
            text=text,
            **fields,
        )


class ReplyStream:
    """One streamed answer: chunks at most every ``interval_s`` (each holds the whole text so
    far), then the final text, which is always published."""

    def __init__(
        self,
        outbox: Outbox,
        target: ChatTarget,
        reply_id: str,
        *,
        attempt: int,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._target = target
        self.reply_id = reply_id
        self._attempt = attempt
        self._interval_s = interval_s
        self._clock = clock
        self._chunks = 0
        self._last_at = float("-inf")
        self.published_text = ""

    async def text(self, text: str) -> bool:
        """Publish ``text`` if the last chunk is old enough; True when it was published."""
        now = self._clock()
        if not text or text == self.published_text or now - self._last_at < self._interval_s:
            return False
        self._chunks += 1
        index = domain.chunk_index(self._attempt, self._chunks)
        await self._publish(text, index, final=False)
        self._last_at = now
        self.published_text = text
        return True

    async def final(self, text: str) -> None:
        await self._publish(text, domain.FINAL_CHUNK_INDEX, final=True)
        self.published_text = text

    async def _publish(self, text: str, index: int, *, final: bool) -> None:
        reply = self._target.reply(
            self.reply_id, text, chunk_index=index, final=final, stream_id=self.reply_id
        )
        await self._outbox.reply(reply, domain.reply_msg_id(self.reply_id, index))


class TaskLog:
    """A task's lifecycle events on ``task.event.<tenant>.<task_id>`` and its hot status.

    ``started`` is called when the model is about to be asked: a cached answer needs neither a
    running status nor a ``TaskStarted`` of its own, which then leaves with ``TaskCompleted``
    (any event publishes ``TaskStarted`` first if it has not gone out yet).

    ``started``, ``completed`` and ``failed`` publish their event at once and leave the status
    write in flight, so the event joins whatever else goes out in the same tick (the final reply,
    ``TaskStarted`` and ``TaskCompleted`` of a cached answer leave in one write to the bus) and
    the round trip to Redis overlaps the next step (the model call, the memory append). Status
    writes stay in order, each after the one before; the run ends with ``settled``, which waits
    for the last and raises its error."""

    def __init__(
        self,
        outbox: Outbox,
        statuses: TaskStatusStore,
        *,
        task_id: str,
        attempt: int,
        worker: str,
        title: str,
        origin: TaskOrigin,
        requested_by: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._statuses = statuses
        self.task_id = task_id
        self._worker = worker
        self._announced = False
        self._running = False
        self._attempt = attempt
        self._title = title
        self._origin = origin
        self._requested_by = requested_by
        self._clock = clock
        self._seq = 0
        self._subject = subjects.task_event(outbox.tenant, task_id)
        self.started_at = clock()
        self._writing: asyncio.Future[None] | None = None

    def _next_seq(self) -> int:
        self._seq += 1
        return domain.chunk_index(self._attempt, self._seq)

    def _status(self, state: TaskState, **fields: Any) -> None:
        """Write the status after the write before it, in the background."""
        status = TaskStatus(
            task_id=self.task_id,
            status=state,
            title=self._title,
            origin=self._origin,
            requested_by=self._requested_by,
            updated_at=self._clock(),
            **fields,
        )
        self._writing = asyncio.ensure_future(self._write(self._writing, status))

    async def _write(self, before: asyncio.Future[None] | None, status: TaskStatus) -> None:
        if before is not None:
            await before
        await self._statuses.put(self._outbox.tenant, status)

    async def settled(self) -> None:
        """Wait for the status writes in flight (raises the error of a failed one)."""
        if self._writing is not None:
            await self._writing

    async def started(self) -> None:
        """The model is about to be asked (again, after a tool round): announce the task and
        write the running status, once."""
        if self._running:
            return
        self._running = True
        await self._announce()
        self._status("running")

    async def _announce(self) -> None:
        if self._announced:
            return
        self._announced = True
        event = TaskStarted(
            task_id=self.task_id,
            attempt=self._attempt,
            worker=self._worker,
            origin=self._origin,
            requested_by=self._requested_by,
            title=self._title,
            conversation_id=self._outbox.conversation_id,
        )
        await self._outbox.publish(
            self._subject, event, derive_msg_id(self.task_id, f"started.{self._attempt}")
        )

    async def progressed(self, chunk: str, message: str = "") -> None:
        seq = self._next_seq()
        await self._publish(
            TaskProgressed(task_id=self.task_id, seq=seq, chunk=chunk, message=message),
            f"progress.{seq}",
        )

    async def tool_called(
        self, tool: str, arguments: str, result: str, ok: bool, duration_ms: int
    ) -> None:
        seq = self._next_seq()
        event = TaskToolCalled(
            task_id=self.task_id,
            seq=seq,
            tool=tool,
            arguments=arguments,
            result=domain.shorten(result, domain.RESULT_EXCERPT_LENGTH),
            ok=ok,
            duration_ms=duration_ms,
        )
        await self._publish(event, f"tool.{seq}")

    async def completed(self, text: str) -> None:
        duration_ms = round((self._clock() - self.started_at) * 1000)
        excerpt = domain.shorten(text, domain.RESULT_EXCERPT_LENGTH)
        event = TaskCompleted(task_id=self.task_id, result_text=text, duration_ms=duration_ms)
        await self._publish(event, "completed")
        self._status("completed", result_text=excerpt)

    async def failed(self, reason: str, code: str, *, retryable: bool) -> None:
        event = TaskFailed(
            task_id=self.task_id, reason=reason, error_code=code, retryable=retryable
        )
        await self._publish(event, "failed")
        self._status("failed", detail=reason)

    async def _publish(self, event: Event, stage: str) -> None:
        await self._announce()  # TaskStarted first, whatever follows
        await self._outbox.publish(self._subject, event, derive_msg_id(self.task_id, stage))
