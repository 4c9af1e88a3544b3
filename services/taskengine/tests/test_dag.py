"""Definitions as graphs: the order steps run in, and which steps are ready once others
completed (what makes one runnable: libs/contracts/tests/test_validation.py)."""

from __future__ import annotations

from typing import Any

from zhongshu.contracts.definitions import StepDefinition, WorkflowDefinition
from zhongshu.contracts.events.workflows import StepKind
from zhongshu.taskengine import dag


def step(
    id: str, *needs: str, kind: StepKind = "infer", config: dict[str, Any] | None = None
) -> StepDefinition:
    return StepDefinition(
        id=id, kind=kind, needs=needs, config={"prompt": id} if config is None else config
    )


def flow(*steps: StepDefinition) -> WorkflowDefinition:
    return WorkflowDefinition(id="wf", tenant="acme", steps=steps)


DIAMOND = flow(
    step("fetch", kind="collect", config={"url": "https://example.com"}),
    step("a", "fetch"),
    step("b", "fetch"),
    step("tell", "a", "b", kind="notify", config={"targets": [{"app": "x", "chat": "c"}]}),
)


def test_a_diamond_runs_in_dependency_order() -> None:
    assert dag.topological_order(DIAMOND) == ("fetch", "a", "b", "tell")
    assert [s.id for s in dag.sinks(DIAMOND)] == ["tell"]


def test_ready_steps_wait_for_every_need_and_skip_taken_ones() -> None:
    assert [s.id for s in dag.ready_steps(DIAMOND, set(), set())] == ["fetch"]
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch"}, set())] == ["a", "b"]
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch", "a"}, {"b"})] == []
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch", "a", "b"}, set())] == ["tell"]
