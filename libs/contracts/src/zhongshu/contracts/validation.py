"""What makes a definition usable (pure): the checks the gateway runs before it stores a workflow
or a trigger, and the task engine runs again before it uses one, so both refuse the same
definitions in the same words.

- A workflow: ids, its graph (unknown, repeated or own needs, cycles), each step's config for its
  kind, bounded retries and timeouts, and placeholders that name only the run's inputs and the
  steps it needs.
- A trigger: a subject filter under ``events.``, a condition that is valid JMESPath, and a task
  template that asks for exactly one of a prompt, a command or a workflow.

``*_problems`` name every reason (empty when usable), ``*_problem`` the reason or None."""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Final

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from zhongshu.contracts.definitions import (
    ID_PATTERN,
    StepDefinition,
    TaskTemplate,
    TriggerDefinition,
    WorkflowDefinition,
)

# --- placeholders ---------------------------------------------------------------------------------

PLACEHOLDER: Final = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
"""``{{root.path}}``: ``{{event.data.temperature}}`` in a trigger's task template,
``{{steps.fetch.json.items.0}}`` and ``{{run.city}}`` in a workflow step's config."""


def placeholders(value: Any) -> Iterator[str]:
    """Every placeholder path in a JSON-like value."""
    if isinstance(value, str):
        for match in PLACEHOLDER.finditer(value):
            yield match.group(1)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from placeholders(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from placeholders(item)


# --- workflows ------------------------------------------------------------------------------------

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


def validate_workflow(definition: WorkflowDefinition) -> WorkflowDefinition:
    """The definition itself, or :class:`WorkflowInvalid` with every problem found."""
    found = workflow_problems(definition)
    if found:
        raise WorkflowInvalid(definition.id, found)
    return definition


def workflow_problems(definition: WorkflowDefinition) -> list[str]:
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
    for path in placeholders(step.config):
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


# --- triggers -------------------------------------------------------------------------------------

_TOKEN: Final = re.compile(r"^[a-z0-9_-]+$")
"""A literal subject token as `contracts.subjects` builds them."""


def trigger_problems(trigger: TriggerDefinition) -> list[str]:
    """Every reason the trigger cannot fire (empty when it can)."""
    found = [
        subject_filter_problem(trigger.subject),
        condition_problem(trigger.condition),
        template_problem(trigger.task),
    ]
    return [problem for problem in found if problem is not None]


def subject_filter_problem(subject: str) -> str | None:
    """Why ``subject`` is not a usable filter under `events.`, or None."""
    tokens = subject.split(".")
    if tokens[0] != "events" or len(tokens) < 2:
        return f"subject {subject!r} must be under events.> (e.g. `events.iot.*` or `events.>`)"
    for index, token in enumerate(tokens[1:], start=1):
        if token == ">":
            if index != len(tokens) - 1:
                return (
                    f"subject {subject!r} must be under events.>, with `>` only as the last token"
                )
        elif token != "*" and not _TOKEN.fullmatch(token):
            return (
                f"subject {subject!r}: token {token!r} is not a subject token "
                "(lower-case letters, digits, `-`, `_`, or the wildcards `*` and `>`)"
            )
    return None


def parse_condition(condition: str) -> ParsedResult | None:
    """The compiled JMESPath expression (None for an empty condition: every event), or
    :class:`ValueError` saying why it does not parse."""
    if not condition.strip():
        return None
    try:
        return jmespath.compile(condition)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"condition {condition!r} is not valid JMESPath: {exc}") from exc


def condition_problem(condition: str) -> str | None:
    """Why ``condition`` is not a JMESPath expression, or None (empty = every event)."""
    try:
        parse_condition(condition)
    except ValueError as exc:
        return str(exc)
    return None


def template_problem(task: TaskTemplate) -> str | None:
    """Why the task a trigger (or a schedule) creates cannot run, or None."""
    given = [kind for kind in (task.prompt, task.command, task.workflow) if kind is not None]
    if len(given) != 1:
        return "a task needs a prompt, a command or a workflow (exactly one of them)"
    return None
