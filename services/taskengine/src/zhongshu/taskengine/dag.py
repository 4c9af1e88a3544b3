"""Workflow definitions as graphs (pure): what makes one runnable, in which order its steps can
run, and which are ready once some have completed.

Validation happens when a run starts (and in the DSL and YAML loaders), so a definition the
gateway accepted with a mistake fails its run with every reason named instead of stalling."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from typing import Any, Final

from zhongshu.contracts.definitions import ID_PATTERN, StepDefinition, WorkflowDefinition
from zhongshu.taskengine import templates

RESERVED_STEP_IDS: Final = frozenset({"run"})
"""`run` names the run's inputs in a step's `inputs` and in placeholders."""
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
MAX_RETRIES: Final = 20
PLACEHOLDER_ROOTS: Final = frozenset({"steps", "run"})


class WorkflowInvalid(ValueError):
    """A definition that cannot run; ``problems`` names every reason."""

    def __init__(self, workflow: str, problems: Iterable[str]) -> None:
        self.workflow = workflow
        self.problems = tuple(problems)
        super().__init__(f"workflow {workflow!r} is invalid: " + "; ".join(self.problems))


def validate(definition: WorkflowDefinition) -> WorkflowDefinition:
    """The definition itself, or :class:`WorkflowInvalid` with every problem found."""
    found = problems(definition)
    if found:
        raise WorkflowInvalid(definition.id, found)
    return definition


def problems(definition: WorkflowDefinition) -> list[str]:
    """Every reason the definition cannot run (empty when it can)."""
    found: list[str] = []
    if not ID_PATTERN.fullmatch(definition.id):
        found.append(f"workflow id {definition.id!r} must match {ID_PATTERN.pattern}")
    if not definition.steps:
        found.append("a workflow needs at least one step")
    seen: set[str] = set()
    for step in definition.steps:
        if step.id in seen:
            found.append(f"step id {step.id!r} is used twice")
        seen.add(step.id)
    for step in definition.steps:
        found.extend(_step_problems(step, seen))
    if not any("needs unknown step" in p or p.endswith("needs itself") for p in found):
        cycle = find_cycle(definition.steps)
        if cycle is not None:
            found.append(
                "steps form a cycle: "
                + ", ".join(f"{a} needs {b}" for a, b in itertools.pairwise(cycle))
            )
    return found


def _step_problems(step: StepDefinition, known: Collection[str]) -> list[str]:
    where = f"step {step.id!r}"
    found: list[str] = []
    if not ID_PATTERN.fullmatch(step.id):
        found.append(f"{where}: id must match {ID_PATTERN.pattern}")
    if step.id in RESERVED_STEP_IDS:
        found.append(f"{where}: the id is reserved (it names the run's inputs)")
    for need in step.needs:
        if need == step.id:
            found.append(f"{where} needs itself")
        elif need not in known:
            found.append(f"{where} needs unknown step {need!r}")
    if len(set(step.needs)) != len(step.needs):
        found.append(f"{where}: a need is listed twice")
    if step.retries < 0 or step.retries > MAX_RETRIES:
        found.append(f"{where}: retries must be between 0 and {MAX_RETRIES}")
    if step.timeout_s <= 0:
        found.append(f"{where}: timeout_s must be positive")
    found.extend(f"{where}: {p}" for p in _config_problems(step))
    for path in templates.references(step.config):
        root, _, rest = path.partition(".")
        if root not in PLACEHOLDER_ROOTS:
            found.append(f"{where}: placeholder {{{{{path}}}}} must start with steps. or run.")
        elif root == "steps" and rest.partition(".")[0] not in step.needs:
            found.append(
                f"{where}: placeholder {{{{{path}}}}} names a step it does not need "
                f"(add it to needs)"
            )
    return found


def _config_problems(step: StepDefinition) -> list[str]:
    config = step.config
    if step.kind == "collect":
        return _collect_problems(config)
    if step.kind == "infer":
        prompt = config.get("prompt")
        return [] if isinstance(prompt, str) and prompt.strip() else ["config.prompt is required"]
    return _notify_problems(config)


def _collect_problems(config: dict[str, Any]) -> list[str]:
    found: list[str] = []
    url = config.get("url")
    if not isinstance(url, str) or not url.strip():
        found.append("config.url is required")
    method = config.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        found.append(f"config.method must be one of {', '.join(sorted(METHODS))}")
    headers = config.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        found.append("config.headers must map names to strings")
    return found


def _notify_problems(config: dict[str, Any]) -> list[str]:
    targets = config.get("targets")
    if not isinstance(targets, list) or not targets:
        return ["config.targets must list at least one target ({app, chat} or {url})"]
    found: list[str] = []
    for index, target in enumerate(targets):
        chat = isinstance(target, dict) and bool(target.get("app")) and bool(target.get("chat"))
        url = isinstance(target, dict) and isinstance(target.get("url"), str)
        if chat == url:  # neither, or both at once
            found.append(f"config.targets[{index}] must be either {{app, chat}} or {{url}}")
    text = config.get("text")
    if text is not None and not isinstance(text, str):
        found.append("config.text must be a string")
    return found


def find_cycle(steps: Iterable[StepDefinition]) -> list[str] | None:
    """One cycle of ``needs`` edges as ``[a, b, ..., a]`` (a needs b ...), or None."""
    needs = {step.id: step.needs for step in steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for need in needs.get(node, ()):
            if state.get(need) == 1:
                return [*path[path.index(need) :], need]
            if need in needs and need not in state:
                cycle = visit(need)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in needs:
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


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
