"""A run's state, folded from its own events on ``workflow.run.<tenant>.<run_id>`` (pure).

The stream is the run's only record: no replica keeps state another would need, and a crashed
engine resumes by reading the same events again. Counting is by distinct attempt numbers, not by
messages, so an event stored twice (a retry after the duplicate window) changes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)


@dataclass
class StepProgress:
    attempts: int = 0
    """The highest attempt a worker started (a crash mid-step counts: the retake is a new
    attempt)."""
    failures: set[int] = field(default_factory=set)
    """Attempts that failed with a retry left."""
    started_at: datetime | None = None
    completed: StepCompleted | None = None
    failed: StepFailed | None = None
    """The final failure."""

    @property
    def done(self) -> bool:
        return self.completed is not None or self.failed is not None

    @property
    def retries_used(self) -> int:
        return len(self.failures)


@dataclass
class RunState:
    run_id: str
    started: RunStarted | None = None
    started_at: datetime | None = None
    correlation_id: str | None = None
    steps: dict[str, StepProgress] = field(default_factory=dict)
    completed: RunCompleted | None = None
    failed: RunFailed | None = None

    @property
    def finished(self) -> bool:
        return self.completed is not None or self.failed is not None

    def step(self, step_id: str) -> StepProgress:
        return self.steps.get(step_id) or StepProgress()

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {
            step_id: progress.completed.output
            for step_id, progress in self.steps.items()
            if progress.completed is not None
        }

    def completed_steps(self) -> set[str]:
        return {s for s, p in self.steps.items() if p.completed is not None}

    def taken_steps(self) -> set[str]:
        """Steps a worker has seen (started, failed or done): requested for sure."""
        return {s for s, p in self.steps.items() if p.attempts or p.failures or p.done}

    def final_failure(self) -> StepFailed | None:
        return next((p.failed for p in self.steps.values() if p.failed is not None), None)


def fold(run_id: str, history: Iterable[Envelope[Any]]) -> RunState:
    """Apply a run's events in stream order. Events of another run that shares the subject
    (subject tokens are sanitized, so distinct ids can share one) are skipped."""
    state = RunState(run_id)
    for envelope in history:
        event = envelope.data
        if getattr(event, "run_id", None) != run_id:
            continue
        if isinstance(event, RunStarted):
            if state.started is None:
                state.started, state.started_at = event, envelope.time
                state.correlation_id = envelope.correlation_id or envelope.id
        elif isinstance(event, RunCompleted):
            state.completed = state.completed or event
        elif isinstance(event, RunFailed):
            state.failed = state.failed or event
        elif isinstance(event, StepStarted | StepCompleted | StepFailed):
            progress = state.steps.setdefault(event.step, StepProgress())
            _apply_step(progress, event, envelope.time)
    return state


def _apply_step(
    progress: StepProgress, event: StepStarted | StepCompleted | StepFailed, at: datetime
) -> None:
    progress.attempts = max(progress.attempts, event.attempt)
    if isinstance(event, StepStarted):
        progress.started_at = at
    elif isinstance(event, StepCompleted):
        progress.completed = progress.completed or event
    elif event.final:
        progress.failed = progress.failed or event
    else:
        progress.failures.add(event.attempt)
