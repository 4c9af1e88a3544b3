"""Loading and matching triggers, and the task an event creates (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from zhongshu.contracts.definitions import TaskTemplate, TriggerDefinition
from zhongshu.taskengine import naming
from zhongshu.taskengine.triggers import (
    LoadedTrigger,
    TriggerInvalid,
    event_id,
    load_trigger,
    parse_event,
    task_for,
)

WRITTEN = datetime(2026, 1, 1, tzinfo=UTC)
LATER = WRITTEN + timedelta(seconds=1)


def trigger(**changes: object) -> TriggerDefinition:
    base = TriggerDefinition(
        id="hot",
        tenant="acme",
        subject="events.iot.*",
        condition="data.temperature > `30`",
        task=TaskTemplate(workflow="cool-down", inputs={"device": "{{event.data.device}}"}),
    )
    return msgspec.structs.replace(base, **changes)


def load(definition: TriggerDefinition, key: str = "acme.hot") -> LoadedTrigger:
    return load_trigger(key, msgspec.json.encode(definition), 7, WRITTEN)


def test_a_trigger_matches_its_subjects_condition_and_tenant() -> None:
    loaded = load(trigger())
    hot = {"data": {"temperature": 35}}
    assert loaded.matches("events.iot.dev-1", hot, LATER)
    assert not loaded.matches("events.iot.dev-1.extra", hot, LATER)
    assert not loaded.matches("events.hr.dev-1", hot, LATER)
    assert not loaded.matches("events.iot.dev-1", {"data": {"temperature": 20}}, LATER)
    assert not loaded.matches("events.iot.dev-1", hot, WRITTEN - timedelta(seconds=1))
    assert not loaded.matches("events.iot.dev-1", {**hot, "tenant": "other"}, LATER)
    assert loaded.matches("events.iot.dev-1", {**hot, "tenant": "acme"}, LATER)
    assert not load(trigger(enabled=False)).matches("events.iot.dev-1", hot, LATER)


@pytest.mark.parametrize(
    ("definition", "key", "reason"),
    [
        (trigger(), "acme.other", "wrong key"),
        (trigger(subject="chat.inbound.>"), "acme.hot", "must be under events.>"),
        (trigger(subject="events.>.x"), "acme.hot", "must be under events.>"),
        (trigger(condition="data.("), "acme.hot", "not valid JMESPath"),
        (trigger(task=TaskTemplate()), "acme.hot", "needs a prompt, a command or a workflow"),
    ],
)
def test_unusable_triggers_are_refused_with_the_reason(
    definition: TriggerDefinition, key: str, reason: str
) -> None:
    with pytest.raises(TriggerInvalid, match=reason):
        load(definition, key)


def test_a_stored_value_that_is_not_a_trigger_is_refused() -> None:
    with pytest.raises(TriggerInvalid):
        load_trigger("acme.hot", b'{"id": "hot"}', 1, WRITTEN)


def test_the_task_of_an_event_is_named_after_the_event_and_the_trigger() -> None:
    raw = b'{"id": "e-1", "data": {"device": "dev-1", "temperature": 35}}'
    event = parse_event(raw)
    assert event is not None
    task = task_for(trigger(), "events.iot.dev-1", event, raw)
    assert task.task_id == naming.trigger_task("e-1", "acme", "hot")
    assert task.workflow is not None
    assert task.workflow.name == "cool-down"
    assert task.inputs == {"device": "dev-1"}
    assert (task.origin, task.requested_by, task.tenant) == ("event", "events:iot", "acme")


def test_an_event_without_an_id_is_named_by_its_bytes() -> None:
    assert event_id({}, b"{}") == event_id({}, b"{}")
    assert event_id({}, b"{}") != event_id({}, b"{ }")
    assert parse_event(b"[1]") is None
    assert parse_event(b"\xff") is None
