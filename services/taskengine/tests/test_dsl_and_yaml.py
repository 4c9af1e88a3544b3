"""Definitions in code and in YAML: the seed's ``collect >> infer >> notify`` style and the
API's YAML shape produce the same `WorkflowDefinition`, and both refuse what cannot run."""

from __future__ import annotations

import msgspec
import pytest

from zhongshu.contracts.definitions import WorkflowDefinition
from zhongshu.contracts.validation import WorkflowInvalid
from zhongshu.taskengine.dsl import callback, chat, collect, infer, notify, workflow
from zhongshu.taskengine.yamlload import load_workflow

YAML = """
id: daily-report
tenant: acme
description: weather for the ops team
steps:
  - id: fetch
    kind: collect
    config: {url: "https://weather.example.com/today", method: POST, body: {city: Hangzhou}}
    retries: 2
  - id: summary
    kind: infer
    needs: [fetch]
    config: {prompt: "Summarize: {{steps.fetch.json}}"}
    timeout_s: 30
  - id: risks
    kind: infer
    needs: [fetch]
    config: {prompt: "Risks in {{steps.fetch.json.alerts}}"}
  - id: tell
    kind: notify
    needs: [summary, risks]
    config:
      targets: [{app: acme-feishu, chat: oc_ops}, {url: "https://hooks.example.com/runs"}]
      text: "{{steps.summary.text}} / {{steps.risks.text}}"
"""


def in_python() -> WorkflowDefinition:
    return workflow(
        "daily-report",
        tenant="acme",
        description="weather for the ops team",
        flow=collect(
            "fetch",
            url="https://weather.example.com/today",
            method="POST",
            body={"city": "Hangzhou"},
            retries=2,
        )
        >> [
            infer("summary", prompt="Summarize: {{steps.fetch.json}}", timeout_s=30),
            infer("risks", prompt="Risks in {{steps.fetch.json.alerts}}"),
        ]
        >> notify(
            "tell",
            targets=[chat("acme-feishu", "oc_ops"), callback("https://hooks.example.com/runs")],
            text="{{steps.summary.text}} / {{steps.risks.text}}",
        ),
    )


def test_python_and_yaml_define_the_same_workflow() -> None:
    assert in_python() == load_workflow(YAML)
    # ... and the same JSON, which is what the gateway stores
    assert msgspec.json.encode(in_python()) == msgspec.json.encode(load_workflow(YAML))


def test_a_branch_is_parallel_and_what_follows_it_joins_it() -> None:
    steps = {s.id: s.needs for s in in_python().steps}
    assert steps == {
        "fetch": (),
        "summary": ("fetch",),
        "risks": ("fetch",),
        "tell": ("summary", "risks"),
    }


def test_flows_compose_from_either_side() -> None:
    a, b, c = infer("a", prompt="a"), infer("b", prompt="b"), infer("c", prompt="c")
    left = workflow("w", tenant="t", flow=[a, b] >> c)
    right = workflow("w", tenant="t", flow=[a, b] >> (c >> notify("n", [chat("x", "y")])))
    assert {s.id: s.needs for s in left.steps} == {"a": (), "b": (), "c": ("a", "b")}
    assert {s.id: s.needs for s in right.steps}["n"] == ("c",)


def test_the_dsl_refuses_a_cycle_by_name() -> None:
    a, b = infer("a", prompt="a"), infer("b", prompt="b")
    with pytest.raises(WorkflowInvalid, match="steps form a cycle: a needs b, b needs a"):
        workflow("w", tenant="t", flow=a >> b >> a)


def test_the_dsl_refuses_one_id_for_two_different_steps() -> None:
    with pytest.raises(ValueError, match="'a' is defined twice"):
        workflow("w", tenant="t", flow=infer("a", prompt="x") >> infer("a", prompt="y"))


def test_yaml_names_the_field_that_is_wrong() -> None:
    with pytest.raises(WorkflowInvalid, match=r"\$\.steps\[0\]\.kind"):
        load_workflow("id: w\ntenant: t\nsteps: [{id: a, kind: sing}]")
    with pytest.raises(WorkflowInvalid, match="needs unknown step 'b'"):
        load_workflow(
            "id: w\ntenant: t\nsteps: [{id: a, kind: infer, needs: [b], config: {prompt: p}}]"
        )
    with pytest.raises(WorkflowInvalid, match="not valid YAML"):
        load_workflow("id: [")


def test_yaml_takes_the_tenant_from_the_caller_and_refuses_another() -> None:
    text = "id: w\nsteps: [{id: a, kind: infer, config: {prompt: p}}]"
    assert load_workflow(text, tenant="acme").tenant == "acme"
    with pytest.raises(WorkflowInvalid, match="tenant is 'other'"):
        load_workflow("tenant: other\n" + text, tenant="acme")


UNLOADABLE = {
    # Found by fuzzing: each raised something other than WorkflowInvalid (a RecursionError).
    "an alias that refers to itself": (
        "id: x\nsteps:\n  - &step {id: a, kind: collect, config: *step}\n"
    ),
    "nested deeper than the parser goes": "id: " + "[" * 5000,
    "nested deeper than the conversion goes": (
        "id: x\nsteps: [{id: a, kind: collect, config: {a: " + "[" * 900 + "]" * 900 + "}}]"
    ),
    # Shared, not copied, by the parser: converting it would build 9**6 strings.
    "aliases of aliases": "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    + "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    + "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    + "id: x\nsteps: [{id: a, kind: collect, config: {url: u, body: *f}}]\n",
}


@pytest.mark.parametrize("text", UNLOADABLE.values(), ids=list(UNLOADABLE))
def test_yaml_that_cannot_be_a_workflow_is_invalid_not_an_error(text: str) -> None:
    with pytest.raises(WorkflowInvalid, match=r"alias|nested too deep"):
        load_workflow(text, tenant="acme")


@pytest.mark.parametrize(
    "tagged",
    [
        *("!!timestamp 1", "!!timestamp junk", "!!timestamp", "!!int junk", "!!int"),
        *("!!float junk", "!!float", "!!bool junk", "!!bool 1", "!!bool"),
    ],
)
def test_an_explicit_tag_on_a_value_it_cannot_read_is_invalid_yaml(tagged: str) -> None:
    # Found by fuzzing: `!!timestamp 1` was an AttributeError, `!!bool x` a KeyError, and so on.
    with pytest.raises(WorkflowInvalid, match="not valid YAML"):
        load_workflow(f"id: {tagged}\nsteps: []\n", tenant="acme")
