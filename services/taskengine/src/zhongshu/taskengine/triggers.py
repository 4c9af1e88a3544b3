"""Event triggers (pure): loading a definition from the `triggers` bucket, deciding whether an
event on ``events.>`` matches it, and the task it creates.

Events come from other teams and devices as CloudEvents-shaped JSON that need not be our
envelope, so they are read as plain JSON objects. Which triggers see an event:

- its subject matches the trigger's filter, and the trigger is enabled;
- the event was stored after the trigger's current version was written: a new (or a new
  consumer's) view of thirty days of history does not fire a trigger created today;
- an event that names a tenant (the CloudEvents extension attribute ``tenant``) is seen only by
  that tenant's triggers; one that names none (a device, another team) by every tenant's
  triggers on that subject, since events on the bus are shared facts, not tenant data;
- its JMESPath condition is truthy on the event."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from zhongshu.contracts import subjects
from zhongshu.contracts.definitions import TriggerDefinition, definition_key
from zhongshu.contracts.events import TaskRequested, WorkflowRef
from zhongshu.contracts.validation import trigger_problems
from zhongshu.taskengine import naming, templates
from zhongshu.taskengine.conditions import Condition, compile_condition


class TriggerInvalid(ValueError):
    """A stored trigger the engine cannot use (logged and left out, never fatal)."""


@dataclass(frozen=True)
class LoadedTrigger:
    key: str
    definition: TriggerDefinition
    condition: Condition
    revision: int
    written_at: datetime

    def matches(self, subject: str, event: dict[str, Any], stored_at: datetime | None) -> bool:
        """Whether the event fires this trigger (:class:`ConditionError` when the condition
        fails on this event)."""
        trigger = self.definition
        if not trigger.enabled or not subjects.subject_matches(trigger.subject, subject):
            return False
        if stored_at is not None and stored_at < self.written_at:
            return False
        tenant = event_tenant(event)
        if tenant is not None and tenant != trigger.tenant:
            return False
        return self.condition.holds(event)


def load_trigger(key: str, value: bytes, revision: int, written_at: datetime) -> LoadedTrigger:
    try:
        trigger = msgspec.json.decode(value, type=TriggerDefinition)
    except msgspec.DecodeError as exc:
        raise TriggerInvalid(f"trigger {key}: {exc}") from None
    try:
        expected = definition_key(trigger.tenant, trigger.id)
    except ValueError as exc:
        raise TriggerInvalid(f"trigger {key}: {exc}") from None
    if expected != key:
        raise TriggerInvalid(f"trigger {key}: stored under the wrong key (expected {expected})")
    problems = trigger_problems(trigger)  # the gateway's check, before it stored the trigger
    if problems:
        raise TriggerInvalid(f"trigger {key}: " + "; ".join(problems))
    return LoadedTrigger(key, trigger, compile_condition(trigger.condition), revision, written_at)


def parse_event(raw: bytes) -> dict[str, Any] | None:
    """The event as a JSON object, or None when it is not one."""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def event_tenant(event: dict[str, Any]) -> str | None:
    tenant = event.get("tenant")
    return tenant if isinstance(tenant, str) and tenant else None


def event_id(event: dict[str, Any], raw: bytes) -> str:
    """The CloudEvents ``id``; for an event without one, a hash of its bytes (the same bytes
    published twice are the same event)."""
    value = event.get("id")
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        return str(value)
    return "sha256-" + hashlib.sha256(raw).hexdigest()[:40]


def task_for(
    trigger: TriggerDefinition, subject: str, event: dict[str, Any], raw: bytes
) -> TaskRequested:
    """The task an event creates: the template with ``{{event.<path>}}`` filled in, under an id
    derived from the event and the trigger."""
    context = {"event": event}
    template = trigger.task
    team = subject.split(".")[1]
    return TaskRequested(
        task_id=naming.trigger_task(event_id(event, raw), trigger.tenant, trigger.id),
        tenant=trigger.tenant,
        requested_by=f"events:{team}",
        origin="event",
        prompt=None if template.prompt is None else templates.render_text(template.prompt, context),
        command=template.command,
        args=tuple(templates.render_text(arg, context) for arg in template.args),
        workflow=None if template.workflow is None else WorkflowRef(name=template.workflow),
        inputs=templates.render(template.inputs, context),
        deliver_to=template.deliver_to,
    )
