"""What makes a definition usable, the one check the gateway and the task engine both run:
workflows (graph, step configs, placeholders, bounds) and triggers (subject filter, JMESPath
condition, task template), every problem named."""

from __future__ import annotations

from typing import Any

import pytest

from zhongshu.contracts import validation
from zhongshu.contracts.definitions import (
    StepDefinition,
    TaskTemplate,
    TriggerDefinition,
    WorkflowDefinition,
)
from zhongshu.contracts.events.workflows import StepKind


def step(
    id: str, *needs: str, kind: StepKind = "infer", config: dict[str, Any] | None = None
) -> StepDefinition:
    return StepDefinition(
        id=id, kind=kind, needs=needs, config={"prompt": id} if config is None else config
    )


def flow(*steps: StepDefinition) -> WorkflowDefinition:
    return WorkflowDefinition(id="wf", tenant="acme", steps=steps)


# --- workflows ------------------------------------------------------------------------------------


def test_a_diamond_is_valid() -> None:
    diamond = flow(
        step("fetch", kind="collect", config={"url": "https://example.com"}),
        step("a", "fetch"),
        step("b", "fetch"),
        step("tell", "a", "b", kind="notify", config={"targets": [{"app": "x", "chat": "c"}]}),
    )
    assert validation.workflow_problems(diamond) == []
    assert validation.validate_workflow(diamond) is diamond


def test_a_cycle_is_refused_and_named() -> None:
    cyclic = flow(step("a", "c"), step("b", "a"), step("c", "b"), step("d"))
    with pytest.raises(validation.WorkflowInvalid) as refused:
        validation.validate_workflow(cyclic)
    assert refused.value.problems == ("steps form a cycle: a needs c, c needs b, b needs a",)


def test_a_step_needing_itself_is_named() -> None:
    assert validation.workflow_problems(flow(step("a", "a"))) == ["step 'a' needs itself"]


def test_unknown_needs_duplicate_ids_and_reserved_ids_are_all_named() -> None:
    found = validation.workflow_problems(flow(step("a", "ghost"), step("a"), step("run")))
    assert "step id 'a' is used twice" in found
    assert "step 'a' needs unknown step 'ghost'" in found
    assert "step 'run': the id is reserved (it names the run's inputs)" in found


def test_each_kind_needs_its_config() -> None:
    found = validation.workflow_problems(
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
    found = validation.workflow_problems(
        flow(
            step("a"),
            step("b", config={"prompt": "{{steps.a.text}} {{run.city}} {{env.HOME}}"}),
        )
    )
    assert found == [
        "step 'b': placeholder {{steps.a.text}} names a step it does not need (add it to needs)",
        "step 'b': placeholder {{env.HOME}} must start with steps. or run.",
    ]


def test_placeholders_finds_every_placeholder() -> None:
    value = {"a": "{{run.x}} and {{steps.s.text}}", "b": ["{{run.y}}"], "c": 3}
    assert sorted(validation.placeholders(value)) == ["run.x", "run.y", "steps.s.text"]


def test_retries_and_timeouts_are_bounded() -> None:
    bad = StepDefinition(id="a", kind="infer", config={"prompt": "p"}, retries=-1, timeout_s=0)
    assert validation.workflow_problems(flow(bad)) == [
        f"step 'a': retries must be between 0 and {validation.MAX_RETRIES}",
        "step 'a': timeout_s must be positive",
    ]


def test_an_empty_workflow_is_refused() -> None:
    assert validation.workflow_problems(flow()) == ["a workflow needs at least one step"]


# --- triggers -------------------------------------------------------------------------------------


def test_trigger_filters_stay_under_events_and_conditions_must_compile() -> None:
    assert validation.subject_filter_problem("events.iot.>") is None
    assert validation.subject_filter_problem("events.*.temperature") is None
    assert validation.subject_filter_problem("events") is not None
    assert validation.subject_filter_problem("task.requested.acme") is not None
    assert validation.subject_filter_problem("events..x") is not None
    assert validation.condition_problem("") is None
    assert validation.condition_problem("data.level == 'critical'") is None
    assert validation.condition_problem("data.level ==") is not None


def test_a_trigger_names_every_problem() -> None:
    usable = TriggerDefinition(
        id="hot", tenant="acme", subject="events.iot.*", task=TaskTemplate(prompt="p")
    )
    assert validation.trigger_problems(usable) == []
    broken = TriggerDefinition(
        id="hot",
        tenant="acme",
        subject="events.>.x",
        condition="data.(",
        task=TaskTemplate(prompt="p", command="report"),
    )
    found = validation.trigger_problems(broken)
    assert (
        found[0] == "subject 'events.>.x' must be under events.>, with `>` only as the last token"
    )
    assert found[1].startswith("condition 'data.(' is not valid JMESPath: ")
    assert found[2] == "a task needs a prompt, a command or a workflow (exactly one of them)"
    assert len(found) == 3
