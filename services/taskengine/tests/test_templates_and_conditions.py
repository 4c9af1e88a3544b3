"""Placeholders and trigger conditions: lookups, not code; JMESPath truthiness, not Python's."""

from __future__ import annotations

import pytest

from zhongshu.taskengine import templates
from zhongshu.taskengine.conditions import ConditionError, compile_condition

CONTEXT = {
    "event": {"data": {"temperature": 35, "tags": ["hot", "roof"], "ok": True}},
    "steps": {"fetch": {"json": {"items": [{"name": "pump"}]}}},
}


def test_text_placeholders_read_values_as_text() -> None:
    text = "{{event.data.temperature}} C, {{event.data.tags}}, {{ event.data.ok }}, [{{nope}}]"
    assert templates.render_text(text, CONTEXT) == '35 C, ["hot","roof"], true, []'


def test_a_lone_placeholder_keeps_its_type_and_lists_are_indexed() -> None:
    rendered = templates.render(
        {"t": "{{event.data.temperature}}", "n": ["{{steps.fetch.json.items.0.name}}"]}, CONTEXT
    )
    assert rendered == {"t": 35, "n": ["pump"]}
    assert templates.render("{{event.missing}}", CONTEXT) is None


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("data.temperature > `30`", True),
        ("data.temperature > `40`", False),
        ("data.count", True),  # 0 is true in JMESPath
        ("data.tags", False),  # an empty list is false
        ("data.missing", False),
        ("", True),
        ("contains(data.labels, 'roof')", True),
    ],
)
def test_conditions_follow_jmespath_truthiness(condition: str, expected: bool) -> None:
    event = {"data": {"temperature": 35, "count": 0, "tags": [], "labels": ["roof"]}}
    assert compile_condition(condition).holds(event) is expected


def test_a_condition_that_does_not_parse_is_refused_when_loaded() -> None:
    with pytest.raises(ConditionError, match="not valid JMESPath"):
        compile_condition("data.temperature >")


def test_a_condition_that_fails_on_one_event_says_so() -> None:
    condition = compile_condition("data.temperature > `30`")
    with pytest.raises(ConditionError, match="failed"):
        condition.holds({"data": {"temperature": "very hot"}})
