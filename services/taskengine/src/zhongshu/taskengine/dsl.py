"""Workflows in Python, in the seed's style::

    fetch = collect("fetch", url="https://status.example.com/api")
    wf = workflow(
        "daily-report",
        tenant="acme",
        flow=fetch
        >> [infer("summary", prompt="Summarize: {{steps.fetch.text}}"),
            infer("risks", prompt="List risks in: {{steps.fetch.text}}")]
        >> notify("tell", targets=[chat("acme-feishu", "oc_ops")],
                  text="{{steps.summary.text}}\\n{{steps.risks.text}}"),
    )

``a >> b`` makes b need a; a list is a parallel branch, and what follows a list needs every
step in it (a join). The result is an ordinary `WorkflowDefinition`, the same one the YAML
loader and the API produce, validated by `contracts.validation`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from zhongshu.contracts.definitions import StepDefinition, WorkflowDefinition
from zhongshu.contracts.events.workflows import StepKind
from zhongshu.contracts.validation import validate_workflow

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True, eq=True)
class Step:
    """One step, not yet placed in a flow."""

    id: str
    kind: StepKind
    config: Mapping[str, Any]
    retries: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __rshift__(self, other: Stage) -> Flow:
        return Flow.of(self) >> other

    def __rrshift__(self, other: Stage) -> Flow:
        return Flow.of(other) >> self


@dataclass(frozen=True)
class Flow:
    """Steps and their edges; ``heads`` start it and ``tails`` end it, so ``>>`` knows what to
    connect to what."""

    steps: dict[str, Step] = field(default_factory=dict)
    edges: tuple[tuple[str, str], ...] = ()
    """(upstream, downstream) pairs: downstream needs upstream."""
    heads: tuple[str, ...] = ()
    tails: tuple[str, ...] = ()

    @classmethod
    def of(cls, stage: Stage) -> Flow:
        if isinstance(stage, Flow):
            return stage
        if isinstance(stage, Step):
            return cls({stage.id: stage}, (), (stage.id,), (stage.id,))
        if isinstance(stage, Sequence) and not isinstance(stage, str):
            branches = [cls.of(item) for item in stage]
            if not branches:
                raise ValueError("an empty list is not a stage")
            merged = branches[0]
            for branch in branches[1:]:
                merged = merged._merge(
                    branch,
                    (),
                    heads=merged.heads + branch.heads,
                    tails=merged.tails + branch.tails,
                )
            return merged
        raise TypeError(f"expected a step, a flow or a list of them, got {type(stage).__name__}")

    def __rshift__(self, other: Stage) -> Flow:
        downstream = Flow.of(other)
        links = tuple((up, down) for up in self.tails for down in downstream.heads)
        return self._merge(downstream, links, heads=self.heads, tails=downstream.tails)

    def __rrshift__(self, other: Stage) -> Flow:
        return Flow.of(other) >> self

    def _merge(
        self, other: Flow, links: tuple[tuple[str, str], ...], *, heads: Any, tails: Any
    ) -> Flow:
        steps = dict(self.steps)
        for step_id, step in other.steps.items():
            if step_id in steps and steps[step_id] != step:
                raise ValueError(f"step id {step_id!r} is defined twice, differently")
            steps[step_id] = step
        edges = tuple(dict.fromkeys((*self.edges, *other.edges, *links)))
        return Flow(steps, edges, _unique(heads), _unique(tails))


Stage: TypeAlias = Step | Flow | Sequence[Step | Flow]


def _unique(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def collect(
    id: str,
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    retries: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Step:
    """Fetch ``url``; the output is ``{status, json}`` or ``{status, text}``."""
    config: dict[str, Any] = {"url": url}
    if method.upper() != "GET":
        config["method"] = method.upper()
    if headers:
        config["headers"] = dict(headers)
    if body is not None:
        config["body"] = body
    return Step(id, "collect", config, retries, timeout_s)


def infer(id: str, prompt: str, *, retries: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S) -> Step:
    """Ask the agent (as a task); the output is ``{text}``."""
    return Step(id, "infer", {"prompt": prompt}, retries, timeout_s)


def notify(
    id: str,
    targets: Sequence[Mapping[str, str]],
    *,
    text: str | None = None,
    retries: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Step:
    """Send ``text`` (default: the texts of the steps it needs) to chats and callbacks."""
    config: dict[str, Any] = {"targets": [dict(target) for target in targets]}
    if text is not None:
        config["text"] = text
    return Step(id, "notify", config, retries, timeout_s)


def chat(app: str, chat_id: str) -> dict[str, str]:
    """A notify target: a chat of a configured app."""
    return {"app": app, "chat": chat_id}


def callback(url: str) -> dict[str, str]:
    """A notify target: a signed POST to ``url``."""
    return {"url": url}


def workflow(id: str, *, tenant: str, flow: Stage, description: str = "") -> WorkflowDefinition:
    """The validated definition of a flow (:class:`WorkflowInvalid` otherwise)."""
    built = Flow.of(flow)
    order = list(built.steps)
    needs: dict[str, list[str]] = {step_id: [] for step_id in order}
    for up, down in built.edges:
        needs[down].append(up)
    steps = tuple(
        StepDefinition(
            id=step.id,
            kind=step.kind,
            needs=tuple(sorted(needs[step.id], key=order.index)),
            config=dict(step.config),
            **_tuning(step),
        )
        for step in built.steps.values()
    )
    return validate_workflow(
        WorkflowDefinition(id=id, tenant=tenant, description=description, steps=steps)
    )


def _tuning(step: Step) -> dict[str, Any]:
    """Retries and timeout only when they differ from the defaults, as float where the wire
    has a float: the definition then encodes to the same JSON as one read from YAML (msgspec
    leaves out defaults by identity, so an equal but separate 60.0 would be written)."""
    tuning: dict[str, Any] = {}
    if step.retries:
        tuning["retries"] = step.retries
    if float(step.timeout_s) != DEFAULT_TIMEOUT_S:
        tuning["timeout_s"] = float(step.timeout_s)
    return tuning
