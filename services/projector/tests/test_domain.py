"""What each projection plans from one message, without a broker or a database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import pytest
from nats.js.kv import KeyValue

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import (
    AlertRaised,
    AuditRecorded,
    Event,
    ReplyDeliveryFailed,
    StepFailed,
    TaskFailed,
    TaskRequested,
    TaskStarted,
    WorkflowRef,
)
from zhongshu.contracts.ids import schedule_fire_id
from zhongshu.projector.projections import (
    audit,
    definitions,
    deliveries,
    rounds,
    schedules,
    tasks,
    workflows,
)
from zhongshu.projector.records import Record
from zhongshu.runtime.errors import PermanentError

AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def record(
    subject: str,
    event: Event,
    *,
    tenant: str = "acme",
    seq: int = 7,
    headers: dict[str, str] | None = None,
) -> Record:
    env = wire.make_envelope(event, id="evt-1", source="test", tenant=tenant, time=AT)
    return Record("S", seq, subject, wire.encode(env), headers or {})


def request(**fields: object) -> TaskRequested:
    values: dict[str, object] = {
        "task_id": "t-1",
        "tenant": "acme",
        "requested_by": "u",
        "origin": "api",
    }
    values.update(fields)
    return TaskRequested(**values)  # type: ignore[arg-type]


def test_a_request_becomes_a_queued_row_and_a_history_entry() -> None:
    change, history = tasks.plan(record(subjects.task_requested("acme"), request(prompt="a  b\nc")))
    assert isinstance(change, tasks.TaskChange)
    assert (change.kind, change.status, change.task_id, change.seq, change.at) == (
        "requested", "queued", "t-1", 7, AT,
    )  # fmt: skip
    assert change.fields["title"] == "a b c"
    assert isinstance(history, tasks.TaskEventRow)
    assert (history.seq, history.event_id, history.type) == (7, "evt-1", TaskRequested.TYPE)
    assert msgspec.json.decode(history.data)["prompt"] == "a  b\nc"


@pytest.mark.parametrize(
    ("fields", "title"),
    [
        ({"command": "backup", "args": ("db", "--full")}, "/backup db --full"),
        ({"workflow": WorkflowRef(name="incident")}, "workflow incident"),
        ({"prompt": "x" * 200}, "x" * 79 + "…"),
    ],
)
def test_a_request_is_titled_as_the_agent_titles_it(fields: dict[str, object], title: str) -> None:
    assert tasks.title_of(request(**fields)) == title


def test_a_schedule_firing_is_named_after_its_next_fire_time() -> None:
    firing = record(
        subjects.task_requested("acme"), request(prompt="p"), headers={H.SCHEDULE_NEXT: "purge"}
    )
    change, _ = tasks.plan(firing)
    assert isinstance(change, tasks.TaskChange)
    assert change.task_id == schedule_fire_id("t-1", "purge")


def test_a_failure_coded_cancelled_cancels_the_task() -> None:
    subject = subjects.task_event("acme", "t-1")
    (cancelled, _) = tasks.plan(
        record(subject, TaskFailed(task_id="t-1", reason="r", error_code="cancelled"))
    )
    (failed, _) = tasks.plan(record(subject, TaskFailed(task_id="t-1", reason="r")))
    assert isinstance(cancelled, tasks.TaskChange)
    assert isinstance(failed, tasks.TaskChange)
    assert (cancelled.status, failed.status) == ("cancelled", "failed")


def test_an_envelope_without_a_tenant_takes_it_from_the_subject() -> None:
    (change, _) = tasks.plan(
        record(subjects.task_event("globex", "t-9"), TaskStarted(task_id="t-9"), tenant="")
    )
    assert isinstance(change, tasks.TaskChange)
    assert change.tenant == "globex"


def test_unknown_and_foreign_event_types_are_skipped_and_garbage_is_refused() -> None:
    unknown = Record(
        "TASKS", 1, "task.event.a.b", b'{"type": "zhongshu.task.future.v9", "data": {}}'
    )
    assert tasks.plan(unknown) == []
    alert = AlertRaised(level="warning", source="x", title="t")
    assert tasks.plan(record(subjects.task_event("a", "b"), alert)) == []
    with pytest.raises(PermanentError):
        tasks.plan(Record("TASKS", 1, "task.event.a.b", b"not json"))


def test_a_step_failure_that_will_be_retried_leaves_the_step_open() -> None:
    subject = subjects.workflow_run("acme", "r")
    (retrying,) = workflows.plan(
        record(subject, StepFailed(run_id="r", step="s", reason="x", final=False))
    )
    (final,) = workflows.plan(record(subject, StepFailed(run_id="r", step="s", reason="x")))
    assert retrying.args[3:] == ("retrying", 1, "x", None, None, 7)
    assert final.args[3:] == ("failed", 1, "x", None, AT, 7)


def test_an_ambiguous_send_is_recorded_as_ambiguous() -> None:
    event = ReplyDeliveryFailed(reply_id="r", platform="dingtalk", reason="timeout", ambiguous=True)
    (change,) = deliveries.plan(
        record(subjects.delivery("ambiguous", "dingtalk", "globex"), event, tenant="")
    )
    assert change.table == "deliveries"
    assert change.args[2] == "globex"
    assert change.args[6] == "ambiguous"


def test_an_audit_row_takes_its_kind_from_the_subject() -> None:
    event = AuditRecorded(
        actor="a", action="chat.denied", target="t", outcome="denied", tenant="acme"
    )
    (row,) = audit.plan(record(subjects.audit("acme", "access"), event))
    assert (row.seq, row.kind, row.action, row.outcome) == (7, "access", "chat.denied", "denied")


def test_schedules_are_definitions_tombstones_or_ignored_firings() -> None:
    headers = {H.SCHEDULE: "@every 1m", H.SCHEDULE_TARGET: "schedule.acme.s.fired"}
    (defined,) = schedules.plan(Record("SCHEDULES", 3, "schedule.acme.s", b'{"a": 1}', headers))
    assert (defined.tenant, defined.schedule_id, defined.spec, defined.template) == (
        "acme", "s", "@every 1m", '{"a":1}',
    )  # fmt: skip
    assert defined.time_zone is None
    (removed,) = schedules.plan(Record("SCHEDULES", 4, "schedule.acme.s", b""))
    assert removed.spec is None
    assert schedules.plan(Record("SCHEDULES", 5, "schedule.acme.s.fired", b"{}", headers)) == []
    with pytest.raises(PermanentError):
        schedules.plan(Record("SCHEDULES", 6, "schedule.acme.s", b"<xml/>", headers))


def entry(key: str, value: bytes | None, operation: str | None = None) -> KeyValue.Entry:
    return KeyValue.Entry(
        bucket="triggers",
        key=key,
        value=value,
        revision=9,
        delta=0,
        created=cast(Any, AT),  # a datetime at run time, whatever the annotation says
        operation=operation,
    )


def test_kv_entries_become_definitions_or_deletions() -> None:
    put = definitions.plan(entry("acme.door", b'{"id": "door", "tenant": "acme"}'))
    assert put is not None
    assert (put.tenant, put.definition_id, put.revision, put.deleted) == ("acme", "door", 9, False)
    assert msgspec.json.decode(put.definition) == {"id": "door", "tenant": "acme"}
    deleted = definitions.plan(entry("acme.door", b"", "DEL"))
    assert deleted is not None
    assert deleted.deleted
    assert definitions.plan(entry("no-tenant", b"{}")) is None
    assert definitions.plan(entry("acme.bad", b"{nope")) is None


def test_a_rows_changes_in_one_batch_go_into_successive_statements_in_order() -> None:
    items = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2)]
    assert rounds(items, key=lambda item: item[0]) == [
        [("a", 1), ("b", 1), ("c", 1)],
        [("a", 2), ("b", 2)],
        [("a", 3)],
    ]
