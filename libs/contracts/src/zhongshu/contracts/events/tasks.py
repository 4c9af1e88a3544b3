"""Tasks: work the agent runs outside a chat turn (API calls, schedules, event rules), recorded
as an event-sourced lifecycle on `task.requested.<tenant>` and `task.event.<tenant>.<task_id>`."""

from typing import Any, ClassVar, Final, Literal

import msgspec

from zhongshu.contracts.events.base import Event

TaskOrigin = Literal["chat", "api", "schedule", "event"]

DELIVERY_TARGET_CHAT: Final = "chat"
"""Post the result in `chat_id` through `app`."""
DELIVERY_TARGET_CALLBACK: Final = "callback"
"""POST the task's events to `url`."""


class WorkflowRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A DAG workflow by name, optionally pinned to a version."""

    name: str
    version: str | None = None


class DeliveryTarget(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a task's result goes: a chat (`app` + `chat_id`) or an HTTP callback (`url`)."""

    kind: str
    """`DELIVERY_TARGET_CHAT`, `DELIVERY_TARGET_CALLBACK`, or a newer kind."""
    app: str | None = None
    chat_id: str | None = None
    url: str | None = None


class TaskRequested(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Someone asked for a task to run: a prompt, a command or a workflow with inputs.

    Published on `task.requested.<tenant>` by the gateway (API), and by the agent for chat
    and event-rule tasks. A schedule holds one as its body on `schedule.<tenant>.<id>`; every
    firing reaches `task.requested.<tenant>` with this body unchanged, so the agent names each
    firing's task `ids.schedule_fire_id(task_id, <Nats-Schedule-Next header>)`. Consumed by
    the agent.
    """

    TYPE: ClassVar[str] = "zhongshu.task.task_requested.v1"

    task_id: str
    tenant: str
    requested_by: str
    """User id, API client id, `schedule:<id>` or `events:<team>`."""
    origin: TaskOrigin
    prompt: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    workflow: WorkflowRef | None = None
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    deliver_to: tuple[DeliveryTarget, ...] = ()
    schedule_id: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.prompt is None and self.command is None and self.workflow is None:
            raise ValueError("a task needs a `prompt`, a `command` or a `workflow`")


class TaskStarted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The agent began (or, after a crash, began again) running a task."""

    TYPE: ClassVar[str] = "zhongshu.task.task_started.v1"

    task_id: str
    attempt: int = 1
    worker: str | None = None
    """The agent replica running it, for debugging."""
    origin: TaskOrigin | None = None
    requested_by: str = ""
    title: str = ""
    """What was asked (the prompt or command, shortened), so read models need no other event."""
    conversation_id: str | None = None


class TaskProgressed(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A task produced output or passed a step; `seq` increases by one per event of a task.

    `chunk` is new output text since the previous event (streamed LLM tokens); `message` is a
    human-readable note such as "step fetch-logs done".
    """

    TYPE: ClassVar[str] = "zhongshu.task.task_progressed.v1"

    task_id: str
    seq: int
    chunk: str = ""
    message: str = ""
    step: str | None = None
    """The workflow step this belongs to, if any."""


class TaskToolCalled(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The model called a tool while running a task, and what came back (the audit trail of
    what the agent did on someone's behalf). `seq` shares the task's counter with
    `TaskProgressed`."""

    TYPE: ClassVar[str] = "zhongshu.task.task_tool_called.v1"

    task_id: str
    seq: int
    tool: str
    """The tool's name as the model saw it (MCP tools are `<server>__<tool>`)."""
    arguments: str = ""
    """The arguments as JSON text, as the model gave them."""
    result: str = ""
    """The result as the model saw it, shortened."""
    ok: bool = True
    duration_ms: int | None = None


class TaskCompleted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A task finished successfully with its result."""

    TYPE: ClassVar[str] = "zhongshu.task.task_completed.v1"

    task_id: str
    result_text: str = ""
    result_data: dict[str, Any] | None = None
    duration_ms: int | None = None


class TaskFailed(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A task ended without a result; `retryable` when running it again may succeed."""

    TYPE: ClassVar[str] = "zhongshu.task.task_failed.v1"

    task_id: str
    reason: str
    error_code: str = ""
    retryable: bool = False
