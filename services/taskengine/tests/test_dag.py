"""Definitions as graphs: the order steps run in, and which steps are ready once others
completed (what makes one runnable: libs/contracts/tests/test_validation.py)."""

from __future__ import annotations

from zhongshu.contracts.definitions import StepDefinition, WorkflowDefinition
from zhongshu.taskengine import dag

DIAMOND = WorkflowDefinition(
    id="wf",
    tenant="acme",
    steps=(
        StepDefinition(id="fetch", kind="collect", config={"url": "https://example.com"}),
        StepDefinition(id="a", kind="infer", needs=("fetch",), config={"prompt": "a"}),
        StepDefinition(id="b", kind="infer", needs=("fetch",), config={"prompt": "b"}),
        StepDefinition(
            id="tell",
            kind="notify",
            needs=("a", "b"),
            config={"targets": [{"app": "x", "chat": "c"}]},
        ),
    ),
)


def test_a_diamond_runs_in_dependency_order() -> None:
    assert dag.topological_order(DIAMOND) == ("fetch", "a", "b", "tell")
    assert [s.id for s in dag.sinks(DIAMOND)] == ["tell"]


def test_ready_steps_wait_for_every_need_and_skip_taken_ones() -> None:
    assert [s.id for s in dag.ready_steps(DIAMOND, set(), set())] == ["fetch"]
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch"}, set())] == ["a", "b"]
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch", "a"}, {"b"})] == []
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch", "a", "b"}, set())] == ["tell"]
