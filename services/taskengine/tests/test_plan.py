"""What a run does next, from its definition and its history (pure): the first steps, a join
once every branch completed, completion, and failure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import (
    Event,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from zhongshu.taskengine import plan
from zhongshu.taskengine.dsl import chat, collect, infer, notify, workflow
from zhongshu.taskengine.runstate import fold

DEFINITION = workflow(
    "report",
    tenant="acme",
    flow=collect("fetch", url="https://example.com/{{run.city}}")
    >> [infer("a", prompt="A {{steps.fetch.json.t}}"), infer("b", prompt="B")]
    >> notify("tell", targets=[chat("app", "oc")], text="{{steps.a.text}}+{{steps.b.text}}"),
)
STARTED = RunStarted(
    run_id="r1",
    tenant="acme",
    workflow="report",
    version=3,
    inputs={"city": "hz"},
    steps=("fetch", "a", "b", "tell"),
)


def history(*events: Event) -> list[wire.Envelope[Any]]:
    return [
        wire.make_envelope(e, id=str(i), source="t", tenant="acme", time=datetime.now(UTC))
        for i, e in enumerate((STARTED, *events))
    ]


def done(step: str, **output: Any) -> StepCompleted:
    return StepCompleted(run_id="r1", step=step, output=output)


def test_a_new_run_requests_its_first_step_with_the_run_inputs_filled_in() -> None:
    decision = plan.decide(DEFINITION, fold("r1", history()))
    assert isinstance(decision, plan.RequestSteps)
    [request] = decision.steps
    assert (request.step, request.config["url"]) == ("fetch", "https://example.com/hz")
    assert request.inputs == {"run": {"city": "hz"}}


def test_both_branches_are_requested_together_with_the_output_they_need() -> None:
    state = fold("r1", history(done("fetch", json={"t": 31})))
    decision = plan.decide(DEFINITION, state)
    assert isinstance(decision, plan.RequestSteps)
    assert [(r.step, r.config["prompt"]) for r in decision.steps] == [("a", "A 31"), ("b", "B")]


def test_a_join_waits_for_every_branch() -> None:
    started_b = StepStarted(run_id="r1", step="b")
    one_branch = fold("r1", history(done("fetch"), done("a", text="x"), started_b))
    assert plan.decide(DEFINITION, one_branch) == plan.RequestSteps(())
    both = fold("r1", history(done("fetch"), done("a", text="x"), done("b", text="y")))
    decision = plan.decide(DEFINITION, both)
    assert isinstance(decision, plan.RequestSteps)
    assert [(r.step, r.config["text"]) for r in decision.steps] == [("tell", "x+y")]


def test_a_run_whose_steps_all_completed_completes_with_its_outputs() -> None:
    state = fold(
        "r1",
        history(done("fetch"), done("a", text="x"), done("b", text="y"), done("tell", text="x+y")),
    )
    decision = plan.decide(DEFINITION, state)
    assert isinstance(decision, plan.CompleteRun)
    assert decision.result_text == "x+y"
    assert set(decision.outputs) == {"fetch", "a", "b", "tell"}


def test_a_final_step_failure_fails_the_run_and_a_retried_one_does_not() -> None:
    retried = StepFailed(run_id="r1", step="fetch", reason="500", attempt=1, final=False)
    state = fold("r1", history(StepStarted(run_id="r1", step="fetch"), retried))
    assert plan.decide(DEFINITION, state) == plan.RequestSteps(())
    assert state.step("fetch").retries_used == 1
    final = StepFailed(run_id="r1", step="fetch", reason="500", attempt=2, final=True)
    decision = plan.decide(DEFINITION, fold("r1", history(retried, final)))
    assert decision == plan.FailRun("step 'fetch' failed: 500", "fetch")


def test_events_of_another_run_on_the_same_subject_are_ignored() -> None:
    state = fold("r1", history(StepCompleted(run_id="r2", step="fetch")))
    assert state.outputs() == {}
