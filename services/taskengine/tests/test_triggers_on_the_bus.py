"""Event triggers on a real JetStream: events on `events.>` that match a trigger create exactly
one task each; others, malformed ones included, create none and block nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
from nats.js.client import JetStreamContext

from services.taskengine.tests.taskengine_testing import WAIT_S, Hub
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams
from zhongshu.contracts.definitions import TaskTemplate, TriggerDefinition, definition_key
from zhongshu.contracts.events import DeliveryTarget, RunCompleted, TaskStarted
from zhongshu.devstack.testing import eventually
from zhongshu.taskengine import naming
from zhongshu.taskengine.dsl import chat, notify, workflow

HOT = "data.temperature > `30`"


def iot_event(device: str, temperature: Any, *, event_id: str | None = None) -> bytes:
    """A CloudEvent as a device's SDK would publish it: not our envelope, no tenant."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or uuid.uuid4().hex,
            "source": f"iot/{device}",
            "type": "com.example.iot.reading",
            "time": "2026-01-01T00:00:00Z",
            "data": {"device": device, "temperature": temperature},
        }
    ).encode()


async def publish(js: JetStreamContext, subject: str, body: bytes) -> None:
    # Devices publish without Nats-Msg-Id: the same event may well be stored twice.
    await js.publish(subject, body, headers={H.CONTENT_TYPE: "application/cloudevents+json"})


def hot_trigger(hub: Hub, trigger_id: str = "hot", condition: str = HOT) -> TriggerDefinition:
    return TriggerDefinition(
        id=trigger_id,
        tenant=hub.tenant,
        subject="events.iot.*",
        condition=condition,
        task=TaskTemplate(
            prompt="Device {{event.data.device}} reads {{event.data.temperature}} C: advise.",
            inputs={"temperature": "{{event.data.temperature}}", "note": "from {{event.source}}"},
            deliver_to=(DeliveryTarget(kind="chat", app=hub.app, chat_id="oc_ops"),),
        ),
    )


async def test_a_hot_reading_creates_one_task_and_a_cool_one_none(hub: Hub) -> None:
    engine = await hub.start_engine()
    await hub.put_trigger(hot_trigger(hub), engine)
    hot = iot_event("dev-1", 35, event_id="evt-hot-" + hub.tenant)
    await publish(hub.js, "events.iot.dev-1", hot)
    await publish(hub.js, "events.iot.dev-1", hot)  # the same event, stored twice
    await publish(hub.js, "events.iot.dev-1", iot_event("dev-1", 20))
    await hub.settle()

    requests = await hub.task_requests()
    assert len(requests) == 1
    envelope = requests[0]
    task = envelope.data
    assert task.task_id == naming.trigger_task("evt-hot-" + hub.tenant, hub.tenant, "hot")
    assert envelope.id == task.task_id
    assert (task.origin, task.requested_by) == ("event", "events:iot")
    assert task.prompt == "Device dev-1 reads 35 C: advise."
    assert task.inputs == {"temperature": 35, "note": "from iot/dev-1"}
    assert task.deliver_to == (DeliveryTarget(kind="chat", app=hub.app, chat_id="oc_ops"),)
    assert envelope.correlation_id == "evt-hot-" + hub.tenant


async def test_malformed_events_are_skipped_and_later_events_still_match(hub: Hub) -> None:
    engine = await hub.start_engine()
    await hub.put_trigger(hot_trigger(hub), engine)
    await publish(hub.js, "events.iot.dev-2", b"{not json")
    await publish(hub.js, "events.iot.dev-2", b'["an array, not an event"]')
    await publish(hub.js, "events.iot.dev-2", iot_event("dev-2", "very hot"))  # a string reading
    await publish(hub.js, "events.iot.dev-2", iot_event("dev-2", 41))
    await hub.settle()
    requests = await hub.task_requests()
    assert [r.data.inputs["temperature"] for r in requests] == [41]


async def test_a_bad_condition_is_ignored_and_other_triggers_still_fire(hub: Hub) -> None:
    engine = await hub.start_engine()
    await hub.put_trigger(hot_trigger(hub, "broken", "data.temperature >"), engine)
    await hub.put_trigger(hot_trigger(hub, "good"), engine)
    event_id = "evt-" + uuid.uuid4().hex
    await publish(hub.js, "events.iot.dev-3", iot_event("dev-3", 50, event_id=event_id))
    await hub.settle()
    requests = await hub.task_requests()
    assert [r.data.task_id for r in requests] == [naming.trigger_task(event_id, hub.tenant, "good")]


async def test_a_trigger_only_sees_events_stored_after_it_was_written(hub: Hub) -> None:
    engine = await hub.start_engine()
    await publish(hub.js, "events.iot.dev-4", iot_event("dev-4", 60))
    await hub.settle()
    await hub.put_trigger(hot_trigger(hub), engine)
    await publish(hub.js, "events.iot.dev-4", iot_event("dev-4", 61))
    await hub.settle()
    requests = await hub.task_requests()
    assert [r.data.inputs["temperature"] for r in requests] == [61]


async def test_an_event_naming_another_tenant_does_not_fire_this_tenants_trigger(
    hub: Hub,
) -> None:
    engine = await hub.start_engine()
    await hub.put_trigger(hot_trigger(hub), engine)
    other = json.loads(iot_event("dev-5", 70))
    mine = json.loads(iot_event("dev-5", 71))
    other["tenant"], mine["tenant"] = "someone-else", hub.tenant
    await publish(hub.js, "events.iot.dev-5", json.dumps(other).encode())
    await publish(hub.js, "events.iot.dev-5", json.dumps(mine).encode())
    await hub.settle()
    requests = await hub.task_requests()
    assert [r.data.inputs["temperature"] for r in requests] == [71]


async def test_a_disabled_or_deleted_trigger_stops_firing(hub: Hub) -> None:
    engine = await hub.start_engine()
    toggled, deleted = hot_trigger(hub, "toggled"), hot_trigger(hub, "deleted")
    await hub.put_trigger(toggled, engine)
    await hub.put_trigger(deleted, engine)
    await publish(hub.js, "events.iot.dev-6", iot_event("dev-6", 80))
    await hub.settle()

    await hub.put_trigger(msgspec.structs.replace(toggled, enabled=False), engine)
    bucket = await hub.js.key_value(streams.TRIGGERS_KV.bucket)
    await bucket.delete(definition_key(hub.tenant, "deleted"))
    table = engine.deps.triggers
    gone = definition_key(hub.tenant, "deleted")
    await eventually(lambda: all(t.key != gone for t in table.triggers), "the deletion", WAIT_S)
    await publish(hub.js, "events.iot.dev-6", iot_event("dev-6", 81))
    await hub.settle()
    requests = await hub.task_requests()
    assert [r.data.inputs["temperature"] for r in requests] == [80, 80]


async def test_an_event_can_start_a_workflow_whose_notify_reaches_the_chat(hub: Hub) -> None:
    engine = await hub.start_engine()
    await hub.put_workflow(
        workflow(
            "cool-down",
            tenant=hub.tenant,
            flow=notify(
                "page",
                targets=[chat(hub.app, "oc_ops")],
                text="{{run.device}} is at {{run.temperature}} C",
            ),
        )
    )
    await hub.put_trigger(
        TriggerDefinition(
            id="overheat",
            tenant=hub.tenant,
            subject="events.iot.*",
            condition=HOT,
            task=TaskTemplate(
                workflow="cool-down",
                inputs={
                    "device": "{{event.data.device}}",
                    "temperature": "{{event.data.temperature}}",
                },
            ),
        ),
        engine,
    )
    event_id = "evt-" + uuid.uuid4().hex
    await publish(hub.js, "events.iot.dev-7", iot_event("dev-7", 44, event_id=event_id))
    run_id = naming.trigger_task(event_id, hub.tenant, "overheat")
    end = await hub.run_end(run_id)
    await hub.settle()
    assert isinstance(end, RunCompleted)
    assert [r.text for r in await hub.replies()] == ["dev-7 is at 44 C"]
    started = [e for e in await hub.task_events(run_id) if isinstance(e, TaskStarted)]
    assert [(s.origin, s.requested_by) for s in started] == [("event", "events:iot")]
