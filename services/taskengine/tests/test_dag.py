"""Definitions as graphs: what makes one runnable (every problem named), the order steps run
in, and which steps are ready once others completed."""

from __future__ import annotations

from typing import Any

import pytest

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


def test_a_diamond_is_valid_and_runs_in_dependency_order() -> None:
    assert dag.problems(DIAMOND) == []
    assert dag.topological_order(DIAMOND) == ("fetch", "a", "b", "tell")
    assert [s.id for s in dag.sinks(DIAMOND)] == ["tell"]


def test_ready_steps_wait_for_every_need_and_skip_taken_ones() -> None:
    assert [s.id for s in dag.ready_steps(DIAMOND, set(), set())] == ["fetch"]
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch"}, set())] == ["a", "b"]
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch", "a"}, {"b"})] == []
    assert [s.id for s in dag.ready_steps(DIAMOND, {"fetch", "a", "b"}, set())] == ["tell"]


def test_a_cycle_is_refused_and_named() -> None:
    cyclic = flow(step("a", "c"), step("b", "a"), step("c", "b"), step("d"))
    with pytest.raises(dag.WorkflowInvalid) as refused:
        dag.validate(cyclic)
    assert refused.value.problems == ("steps form a cycle: a needs c, c needs b, b needs a",)


def test_a_step_needing_itself_is_named() -> None:
    assert dag.problems(flow(step("a", "a"))) == ["step 'a' needs itself"]


def test_unknown_needs_duplicate_ids_and_reserved_ids_are_all_named() -> None:
    found = dag.problems(flow(step("a", "ghost"), step("a"), step("run")))
    assert "step id 'a' is used twice" in found
    assert "step 'a' needs unknown step 'ghost'" in found
    assert "step 'run': the id is reserved (it names the run's inputs)" in found


def test_each_kind_needs_its_config() -> None:
    found = dag.problems(
        flow(
            step("fetch", kind="collect", config={"method": "FETCH"}),
            step("think", config={}),
            step("tell", kind="notify", config={"targets": [{"app": "x"}, {"url": "u"}]}),
        )
    )
    assert found == [
        "step 'fetch': config.url is required",
        "step 'fetch': config.method must be one of DELETE, GET, HEAD, PATCH, POST, PUT",
        "step 'think': config.prompt is required",
        "step 'tell': config.targets[0] must be either {app, chat} or {url}",
    ]


def test_placeholders_may_only_name_needed_steps_and_run_inputs() -> None:
    found = dag.problems(
        flow(
            step("a"),
            step("b", config={"prompt": "{{steps.a.text}} {{run.city}} {{env.HOME}}"}),
        )
    )
    assert found == [
        "step 'b': placeholder {{steps.a.text}} names a step it does not need (add it to needs)",
        "step 'b': placeholder {{env.HOME}} must start with steps. or run.",
    ]


def test_retries_and_timeouts_are_bounded() -> None:
    bad = StepDefinition(id="a", kind="infer", config={"prompt": "p"}, retries=-1, timeout_s=0)
    assert dag.problems(flow(bad)) == [
        f"step 'a': retries must be between 0 and {dag.MAX_RETRIES}",
        "step 'a': timeout_s must be positive",
    ]


def test_an_empty_workflow_is_refused() -> None:
    assert dag.problems(flow()) == ["a workflow needs at least one step"]
