"""One source of truth for what makes a definition usable: the gateway (before it stores a
workflow or a trigger) and the task engine (before it runs one) refuse the same definition in
the same words, because both call `contracts.validation`. The same JSON goes to both: the
gateway's request body, and what the engine reads from the bucket (which adds the tenant)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from zhongshu.contracts.validation import WorkflowInvalid
from zhongshu.gateway.models.triggers import TriggerCreate
from zhongshu.gateway.models.workflows import WorkflowCreate
from zhongshu.taskengine.triggers import TriggerInvalid, load_trigger
from zhongshu.taskengine.yamlload import load_workflow

TENANT = "acme"
WRITTEN = datetime(2026, 1, 1, tzinfo=UTC)


def gateway_refusal(model: type[TriggerCreate | WorkflowCreate], body: dict[str, Any]) -> str:
    """The reason the gateway gives (its problem+json `detail` is `<field>: <this>`)."""
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    [error] = refused.value.errors()
    return str(error["msg"]).removeprefix("Value error, ")


@pytest.mark.parametrize(
    "steps",
    [
        [
            {"id": "a", "kind": "collect", "needs": ["c"], "config": {"url": "https://x.test"}},
            {"id": "b", "kind": "infer", "needs": ["a"], "config": {"prompt": "p"}},
            {"id": "c", "kind": "infer", "needs": ["b"], "config": {"prompt": "p"}},
        ],
        [{"id": "a", "kind": "collect"}, {"id": "a", "kind": "infer"}],
        [{"id": "a", "kind": "collect", "needs": ["ghost"], "config": {"url": "https://x.test"}}],
        [{"id": "a", "kind": "infer", "config": {"prompt": "{{steps.b.text}} {{env.HOME}}"}}],
        [{"id": "a", "kind": "notify", "config": {"targets": [{"app": "x"}]}}],
    ],
)
def test_a_workflow_is_refused_in_the_same_words_by_the_gateway_and_the_engine(
    steps: list[dict[str, Any]],
) -> None:
    body = {"id": "w1", "steps": steps}
    said_by_gateway = gateway_refusal(WorkflowCreate, body)
    with pytest.raises(WorkflowInvalid) as engine:
        load_workflow(json.dumps(body), tenant=TENANT)
    assert said_by_gateway == "; ".join(engine.value.problems)


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "chat.inbound.>"},
        {"subject": "events.>.x"},
        {"subject": "events.IoT"},
        {"condition": "data.[[temperature"},
        {"task": {"prompt": "x", "command": "report"}},
    ],
)
def test_a_trigger_is_refused_in_the_same_words_by_the_gateway_and_the_engine(
    change: dict[str, Any],
) -> None:
    body = {"id": "t1", "subject": "events.iot.>", "task": {"prompt": "x"}, **change}
    said_by_gateway = gateway_refusal(TriggerCreate, body)
    stored = json.dumps({**body, "tenant": TENANT}).encode()
    with pytest.raises(TriggerInvalid) as engine:
        load_trigger(f"{TENANT}.t1", stored, 1, WRITTEN)
    assert str(engine.value) == f"trigger {TENANT}.t1: {said_by_gateway}"
