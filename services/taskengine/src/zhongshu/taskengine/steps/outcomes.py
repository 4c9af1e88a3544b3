"""What running a step came to, as values: the worker, not the step, decides what follows
(complete, retry, or fail the run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import RunStarted, StepRequested
from zhongshu.runtime.outbox import Outbox
from zhongshu.taskengine.engine import Engine


@dataclass(frozen=True)
class Succeeded:
    output: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Awaiting:
    """The step's result arrives later as an event (an infer step's agent task)."""


Outcome = Succeeded | Failed | Awaiting


@dataclass(frozen=True)
class StepContext:
    """One take of one step."""

    engine: Engine
    envelope: Envelope[StepRequested]
    run: RunStarted
    retries_used: int
    outbox: Outbox

    @property
    def request(self) -> StepRequested:
        return self.envelope.data
