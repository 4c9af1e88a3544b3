"""Workflow definitions as graphs (pure): in which order their steps can run, and which are
ready once some have completed.

What makes one runnable is `contracts.validation`, the check the gateway also runs. It runs
again when a run starts (and in the DSL and YAML loaders), so a definition stored with a mistake
fails its run with every reason named instead of stalling."""

from __future__ import annotations

from collections.abc import Collection

from zhongshu.contracts.definitions import StepDefinition, WorkflowDefinition
from zhongshu.contracts.validation import WorkflowInvalid


def topological_order(definition: WorkflowDefinition) -> tuple[str, ...]:
    """Step ids, each after everything it needs; ties keep the definition's order."""
    remaining = {step.id: set(step.needs) for step in definition.steps}
    order: list[str] = []
    while remaining:
        ready = [sid for sid, needs in remaining.items() if not needs]
        if not ready:
            raise WorkflowInvalid(definition.id, ["steps form a cycle"])
        for sid in ready:
            del remaining[sid]
            order.append(sid)
        for needs in remaining.values():
            needs.difference_update(ready)
    return tuple(order)


def ready_steps(
    definition: WorkflowDefinition, completed: Collection[str], taken: Collection[str]
) -> tuple[StepDefinition, ...]:
    """Steps whose needs have all completed and that have not been taken up yet."""
    return tuple(
        step
        for step in definition.steps
        if step.id not in completed
        and step.id not in taken
        and all(need in completed for need in step.needs)
    )


def sinks(definition: WorkflowDefinition) -> tuple[StepDefinition, ...]:
    """Steps no other step needs: their outputs are the run's result."""
    needed = {need for step in definition.steps for need in step.needs}
    return tuple(step for step in definition.steps if step.id not in needed)


def step_by_id(definition: WorkflowDefinition, step_id: str) -> StepDefinition | None:
    return next((step for step in definition.steps if step.id == step_id), None)
