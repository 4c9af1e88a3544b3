"""What a run does next, decided from its definition and its state (pure): request the steps
that became ready, complete, or fail. The coordinator only publishes what this returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zhongshu.contracts.definitions import StepDefinition, WorkflowDefinition
from zhongshu.contracts.events import RunStarted, StepRequested
from zhongshu.taskengine import dag, templates
from zhongshu.taskengine.runstate import RunState


@dataclass(frozen=True)
class RequestSteps:
    steps: tuple[StepRequested, ...]


@dataclass(frozen=True)
class CompleteRun:
    outputs: dict[str, dict[str, Any]]
    result_text: str


@dataclass(frozen=True)
class FailRun:
    reason: str
    step: str | None = None


Decision = RequestSteps | CompleteRun | FailRun


def decide(definition: WorkflowDefinition, state: RunState) -> Decision:
    """A final step failure fails the run; all steps done completes it; otherwise every step
    whose needs have completed and that nobody has taken up yet is requested (asking twice is
    harmless: the request of a step is published once)."""
    failure = state.final_failure()
    if failure is not None:
        return FailRun(f"step {failure.step!r} failed: {failure.reason}", failure.step)
    outputs = state.outputs()
    if all(step.id in outputs for step in definition.steps):
        return CompleteRun(outputs, result_text(definition, outputs))
    assert state.started is not None
    ready = dag.ready_steps(definition, outputs.keys(), state.taken_steps())
    return RequestSteps(tuple(step_request(state.started, step, outputs) for step in ready))


def step_request(
    run: RunStarted, step: StepDefinition, outputs: dict[str, dict[str, Any]]
) -> StepRequested:
    """A step's work with its placeholders filled from the outputs it needs and the run's
    inputs (validation guarantees it names nothing else)."""
    needed = {need: outputs.get(need, {}) for need in step.needs}
    context = {"steps": needed, "run": run.inputs}
    return StepRequested(
        run_id=run.run_id,
        tenant=run.tenant,
        workflow=run.workflow,
        step=step.id,
        kind=step.kind,
        config=templates.render(step.config, context),
        inputs={**needed, "run": run.inputs},
        timeout_s=step.timeout_s,
        retries=step.retries,
    )


def result_text(definition: WorkflowDefinition, outputs: dict[str, dict[str, Any]]) -> str:
    """The run's answer as text: what its last steps said (a notify step says nothing)."""
    texts = [
        text
        for step in dag.sinks(definition)
        if isinstance(text := outputs.get(step.id, {}).get("text"), str) and text
    ]
    return "\n\n".join(texts)
