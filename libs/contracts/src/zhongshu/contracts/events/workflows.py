"""Workflow runs: a DAG of steps run one message per step, each completion an event, so a crash
resumes at the step it was on. A run is a task (`run_id == task_id`), started by a
`TaskRequested` with a `workflow`; its steps' events are on `workflow.run.<tenant>.<run_id>` and
the work of each step on `workflow.step.<tenant>.<run_id>.<step>`."""

from typing import Any, ClassVar, Literal

import msgspec

from zhongshu.contracts.events.base import Event

StepKind = Literal["collect", "infer", "notify"]


class RunStarted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The engine accepted a run of a workflow definition (at the version it read)."""

    TYPE: ClassVar[str] = "zhongshu.workflow.run_started.v1"

    run_id: str
    tenant: str
    workflow: str
    version: int = 0
    """The definition's revision in the `workflows` bucket."""
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    requested_by: str = ""
    steps: tuple[str, ...] = ()
    """Every step id, in a topological order."""


class StepRequested(Event, frozen=True, kw_only=True, omit_defaults=True):
    """One step's work, for a step worker (the message is the step: acked when it is done)."""

    TYPE: ClassVar[str] = "zhongshu.workflow.step_requested.v1"

    run_id: str
    tenant: str
    workflow: str
    step: str
    kind: StepKind
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    """The step's definition (`url`, `prompt`, `targets`...), with its inputs substituted."""
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """The outputs of the steps it needs, by step id, and the run's inputs under `run`."""
    timeout_s: float | None = None
    retries: int = 0


class StepStarted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A step worker took a step's work (again, after a crash: ``attempt`` counts)."""

    TYPE: ClassVar[str] = "zhongshu.workflow.step_started.v1"

    run_id: str
    step: str
    attempt: int = 1


class StepCompleted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A step finished; its output is what the steps that need it receive."""

    TYPE: ClassVar[str] = "zhongshu.workflow.step_completed.v1"

    run_id: str
    step: str
    output: dict[str, Any] = msgspec.field(default_factory=dict)
    duration_ms: int | None = None
    attempt: int = 1


class StepFailed(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A step attempt failed; `final` when no retry is left (the run then fails)."""

    TYPE: ClassVar[str] = "zhongshu.workflow.step_failed.v1"

    run_id: str
    step: str
    reason: str
    attempt: int = 1
    final: bool = True
    duration_ms: int | None = None


class RunCompleted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Every step of the run completed; the run's task completes with it."""

    TYPE: ClassVar[str] = "zhongshu.workflow.run_completed.v1"

    run_id: str
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """Every step's output, by step id."""
    duration_ms: int | None = None


class RunFailed(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A step failed for good (or the definition was unusable); the run's task fails too."""

    TYPE: ClassVar[str] = "zhongshu.workflow.run_failed.v1"

    run_id: str
    reason: str
    step: str | None = None
