"""Triggers, workflows and subscriptions are JSON definitions in their KV buckets (what the task
engine and the notifier watch), validated before they are stored; workflow runs are task
requests, and their history comes from the warm tier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError

from services.gateway.tests.gateway_testing import CALLBACK_KEY, Api
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.definitions import (
    TASK_CALLBACKS_ID,
    Subscription,
    TriggerDefinition,
    WorkflowDefinition,
    definition_key,
    subscription_secret,
)
from zhongshu.contracts.events import AuditRecorded, TaskRequested
from zhongshu.contracts.streams import SUBSCRIPTIONS_KV, TRIGGERS_KV, WORKFLOWS_KV
from zhongshu.devstack.testing import collect

ADMIN = ("admin",)

WORKFLOW_YAML = """
id: morning-brief
description: collect >> (summarize, count) >> notify
steps:
  - id: collect
    kind: collect
    config: {url: "https://status.example.com/api"}
  - id: summarize
    kind: infer
    needs: [collect]
    config: {prompt: "Summarize {{steps.collect.text}}"}
  - id: count
    kind: infer
    needs: [collect]
    config: {prompt: "Count incidents in {{steps.collect.text}}"}
  - id: notify
    kind: notify
    needs: [summarize, count]
    retries: 2
    timeout_s: 30
    config: {targets: [{app: acme-feishu, chat: oc_ops}], text: "{{steps.summarize.text}}"}
"""


async def stored(js: JetStreamContext, bucket: str, tenant: str, key: str) -> bytes | None:
    kv = await js.key_value(bucket)
    try:
        entry = await kv.get(definition_key(tenant, key))
    except KeyNotFoundError:
        return None
    return entry.value


# --- triggers -------------------------------------------------------------------------------------


async def test_a_trigger_is_stored_as_a_definition_the_engine_reads(
    api: Api, js: JetStreamContext
) -> None:
    body: dict[str, Any] = {
        "id": "hot-device",
        "subject": "events.iot.*",
        "condition": "data.temperature > `30`",
        "task": {
            "prompt": "Device {{event.subject}} is hot",
            "deliver_to": [{"kind": "chat", "app": "acme-feishu", "chat_id": "oc_ops"}],
        },
    }
    answer = await api.client.post("/api/v1/triggers", json=body, headers=api.auth(*ADMIN))
    assert answer.status_code == 201, answer.text
    assert answer.json()["version"] > 0
    raw = await stored(js, TRIGGERS_KV.bucket, api.tenant, "hot-device")
    assert raw is not None
    trigger = msgspec.json.decode(raw, type=TriggerDefinition)
    assert (trigger.id, trigger.tenant, trigger.subject, trigger.enabled) == (
        "hot-device",
        api.tenant,
        "events.iot.*",
        True,
    )
    assert trigger.task.deliver_to[0].chat_id == "oc_ops"

    auth = api.auth(*ADMIN)
    body["enabled"] = False
    del body["id"]
    replaced = await api.client.put("/api/v1/triggers/hot-device", json=body, headers=auth)
    assert replaced.status_code == 200
    assert not replaced.json()["enabled"]
    listed = (await api.client.get("/api/v1/triggers", headers=auth)).json()["items"]
    assert [(t["id"], t["enabled"]) for t in listed] == [("hot-device", False)]
    assert (await api.client.delete("/api/v1/triggers/hot-device", headers=auth)).status_code == 204
    assert await stored(js, TRIGGERS_KV.bucket, api.tenant, "hot-device") is None
    assert (await api.client.get("/api/v1/triggers/hot-device", headers=auth)).status_code == 404


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"subject": "chat.inbound.>"}, "events."),
        ({"subject": "events.>.x"}, ">"),
        ({"subject": "events.IoT"}, "token"),
        ({"condition": "data.[[temperature"}, "JMESPath"),
        ({"task": {"workflow": {"name": "w", "version": "3"}}}, "latest version"),
    ],
)
async def test_a_trigger_that_cannot_work_is_refused_with_the_reason(
    api: Api, js: JetStreamContext, change: dict[str, Any], says: str
) -> None:
    body = {"id": "t1", "subject": "events.iot.>", "task": {"prompt": "x"}, **change}
    answer = await api.client.post("/api/v1/triggers", json=body, headers=api.auth(*ADMIN))
    assert answer.status_code == 422
    assert says in answer.json()["detail"]
    assert await stored(js, TRIGGERS_KV.bucket, api.tenant, "t1") is None


# --- workflows ------------------------------------------------------------------------------------


async def test_a_yaml_workflow_is_stored_and_runs_are_task_requests(
    api: Api, js: JetStreamContext
) -> None:
    answer = await api.client.post(
        "/api/v1/workflows",
        content=WORKFLOW_YAML.encode(),
        headers={**api.auth(*ADMIN), "content-type": "application/yaml"},
    )
    assert answer.status_code == 201, answer.text
    raw = await stored(js, WORKFLOWS_KV.bucket, api.tenant, "morning-brief")
    assert raw is not None
    workflow = msgspec.json.decode(raw, type=WorkflowDefinition)
    assert [s.id for s in workflow.steps] == ["collect", "summarize", "count", "notify"]
    assert workflow.steps[3].needs == ("summarize", "count")
    assert (workflow.steps[3].retries, workflow.steps[3].timeout_s) == (2, 30)

    read = await api.client.get("/api/v1/workflows/morning-brief", headers=api.auth("tasks:read"))
    assert read.json()["version"] == answer.json()["version"]

    run = await api.client.post(
        "/api/v1/workflows/morning-brief/runs",
        json={
            "inputs": {"day": "2026-11-25"},
            "deliver_to": [{"kind": "callback", "url": "https://example.com/r"}],
        },
        headers=api.auth("tasks:write"),
    )
    assert run.status_code == 202, run.text
    run_id = run.json()["run_id"]
    assert run.headers["location"] == f"/api/v1/workflows/morning-brief/runs/{run_id}"
    [msg] = await collect(js, subjects.task_requested(api.tenant), count=1, within_s=5)
    request = wire.decode(msg.data, TaskRequested).data
    assert request.task_id == run_id
    assert request.workflow is not None
    assert request.workflow.name == "morning-brief"
    assert request.inputs == {"day": "2026-11-25"}

    missing = await api.client.post(
        "/api/v1/workflows/nothing/runs", json={}, headers=api.auth("tasks:write")
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        (
            [
                {"id": "a", "kind": "collect", "needs": ["c"]},
                {"id": "b", "kind": "infer", "needs": ["a"]},
                {"id": "c", "kind": "notify", "needs": ["b"]},
            ],
            "cycle: a needs c, c needs b, b needs a",
        ),
        ([{"id": "a", "kind": "collect"}, {"id": "a", "kind": "infer"}], "is used twice"),
        ([{"id": "a", "kind": "collect", "needs": ["ghost"]}], "needs unknown step 'ghost'"),
        ([{"id": "a", "kind": "collect"}], "config.url is required"),
        ([{"id": "a", "kind": "teleport"}], "kind"),
        ([], "steps"),
    ],
)
async def test_a_workflow_that_is_not_a_dag_is_refused_naming_the_problem(
    api: Api, js: JetStreamContext, steps: list[dict[str, Any]], says: str
) -> None:
    answer = await api.client.post(
        "/api/v1/workflows", json={"id": "w1", "steps": steps}, headers=api.auth(*ADMIN)
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert says in answer.text
    assert await stored(js, WORKFLOWS_KV.bucket, api.tenant, "w1") is None


async def test_workflow_bodies_must_be_json_or_yaml_without_aliases(
    api: Api, js: JetStreamContext
) -> None:
    auth = api.auth(*ADMIN)
    wrong_type = await api.client.post(
        "/api/v1/workflows", content=b"id=w", headers={**auth, "content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nid: w\nsteps: [*b]\n"
    aliased = await api.client.post(
        "/api/v1/workflows",
        content=bomb.encode(),
        headers={**auth, "content-type": "application/yaml"},
    )
    assert aliased.status_code == 422
    assert "aliases" in aliased.json()["detail"]
    # What fuzzing found in the workflow loader: PyYAML's own errors on unreadable explicit
    # tags, and nesting deeper than the parsers go, in YAML and in JSON, are 422s too.
    for body, media in (
        (b"id: w\nsteps: !!timestamp 1\n", "application/yaml"),
        (b"id: !!bool x\n", "application/yaml"),
        (b"[" * 5000, "application/yaml"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ):
        refused = await api.client.post(
            "/api/v1/workflows", content=body, headers={**auth, "content-type": media}
        )
        assert refused.status_code == 422, (body[:30], refused.text)
        assert "not valid" in refused.json()["detail"]
    assert await stored(js, WORKFLOWS_KV.bucket, api.tenant, "w") is None


async def test_run_history_shows_each_steps_status_and_duration(
    api: Api, warm: asyncpg.Connection
) -> None:
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    for i, run_id in enumerate(("run-1", "run-2")):
        at = start + timedelta(hours=i)
        await warm.execute(
            """INSERT INTO workflow_runs (tenant, run_id, workflow, version, status, inputs,
                   started_at, finished_at, duration_ms, updated_at, last_seq)
               VALUES ($1, $2, 'brief', 3, $3, $4, $5, $6, $7, $5, 1)""",
            api.tenant,
            run_id,
            "completed" if i == 0 else "running",
            {"day": i},
            at,
            at + timedelta(seconds=9) if i == 0 else None,
            9000 if i == 0 else None,
        )
    for step, status, ms in (("collect", "completed", 1200), ("notify", "completed", 300)):
        await warm.execute(
            """INSERT INTO workflow_steps (tenant, run_id, step, status, attempt, started_at,
                   finished_at, duration_ms, last_seq)
               VALUES ($1, 'run-1', $2, $3, 1, $4, $5, $6, 1)""",
            api.tenant,
            step,
            status,
            start,
            start + timedelta(milliseconds=ms),
            ms,
        )
    auth = api.auth("tasks:read")
    page = (await api.client.get("/api/v1/workflows/brief/runs", headers=auth)).json()
    assert [(r["run_id"], r["status"]) for r in page["items"]] == [
        ("run-2", "running"),
        ("run-1", "completed"),
    ]
    run = (await api.client.get("/api/v1/workflows/brief/runs/run-1", headers=auth)).json()
    assert (run["status"], run["duration_ms"], run["version"]) == ("completed", 9000, 3)
    assert [(s["step"], s["status"], s["duration_ms"]) for s in run["steps"]] == [
        ("collect", "completed", 1200),
        ("notify", "completed", 300),
    ]
    other = await api.client.get(
        "/api/v1/workflows/brief/runs/run-1", headers=api.auth("tasks:read", tenant="elsewhere")
    )
    assert other.status_code == 404


# --- subscriptions --------------------------------------------------------------------------------


async def test_a_subscription_shows_its_secret_once_and_stores_none(
    api: Api, js: JetStreamContext
) -> None:
    auth = api.auth(*ADMIN)
    body = {"id": "erp", "url": "https://erp.example.com/hooks", "event_types": ["zhongshu.task.*"]}
    answer = await api.client.post("/api/v1/subscriptions", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    secret = answer.json()["signing"]["secret"]
    assert secret == subscription_secret(CALLBACK_KEY.encode(), api.tenant, "erp")
    assert answer.json()["signing"]["signature_header"] == "X-Zhongshu-Signature"

    raw = await stored(js, SUBSCRIPTIONS_KV.bucket, api.tenant, "erp")
    assert raw is not None
    assert secret not in raw.decode()
    assert msgspec.json.decode(raw, type=Subscription).event_types == ("zhongshu.task.*",)
    read = await api.client.get("/api/v1/subscriptions/erp", headers=auth)
    assert secret not in read.text
    listed = await api.client.get("/api/v1/subscriptions", headers=auth)
    assert secret not in listed.text
    assert [s["id"] for s in listed.json()["items"]] == ["erp"]

    bad = await api.client.post(
        "/api/v1/subscriptions",
        json={**body, "id": "x", "url": "javascript:alert(1)"},
        headers=auth,
    )
    assert bad.status_code == 422

    task_secret = await api.client.post("/api/v1/task-callbacks/secret", headers=auth)
    assert task_secret.json()["secret"] == subscription_secret(
        CALLBACK_KEY.encode(), api.tenant, TASK_CALLBACKS_ID
    )

    # Both are in the tenant's audit trail, naming who did it and never the secret.
    trail = await collect(js, subjects.audit(api.tenant, "api"), count=2, within_s=5)
    events = [wire.decode(m.data, AuditRecorded).data for m in trail]
    assert [(e.action, e.target, e.actor) for e in events] == [
        ("subscription.created", "erp", "api:test-client"),
        ("task_callbacks.secret_revealed", TASK_CALLBACKS_ID, "api:test-client"),
    ]
    assert all(secret not in m.data.decode() for m in trail)


async def test_a_subscriptions_delivery_log_comes_from_the_warm_tier(
    api: Api, warm: asyncpg.Connection
) -> None:
    auth = api.auth(*ADMIN)
    body = {"id": "erp", "url": "https://erp.example.com/hooks"}
    assert (await api.client.post("/api/v1/subscriptions", json=body, headers=auth)).is_success
    start = datetime(2026, 11, 25, tzinfo=UTC)
    for i, (status, code) in enumerate((("delivered", 200), ("failed", 500), ("delivered", 204))):
        await warm.execute(
            """INSERT INTO callback_deliveries (tenant, subscription_id, event_id, event_type,
                   status, status_code, attempts, at, last_seq) VALUES ($1, $2, $3, $4, $5, $6,
                   $7, $8, 1)""",
            api.tenant,
            "erp" if i < 2 else TASK_CALLBACKS_ID,
            f"evt-{i}",
            "zhongshu.task.task_completed.v1",
            status,
            code,
            1 + i,
            start + timedelta(seconds=i),
        )
    page = (await api.client.get("/api/v1/subscriptions/erp/deliveries", headers=auth)).json()
    assert [(d["event_id"], d["status"], d["status_code"]) for d in page["items"]] == [
        ("evt-1", "failed", 500),
        ("evt-0", "delivered", 200),
    ]
    tasks = await api.client.get(
        f"/api/v1/subscriptions/{TASK_CALLBACKS_ID}/deliveries", headers=auth
    )
    assert [d["event_id"] for d in tasks.json()["items"]] == ["evt-2"]
    unknown = await api.client.get("/api/v1/subscriptions/nope/deliveries", headers=auth)
    assert unknown.status_code == 404


async def test_an_unexpected_failure_is_a_500_problem_without_details(
    api: Api, js: JetStreamContext
) -> None:
    kv = await js.key_value(WORKFLOWS_KV.bucket)
    await kv.put(definition_key(api.tenant, "broken"), b'{"not": "a workflow"}')
    answer = await api.client.get("/api/v1/workflows/broken", headers=api.auth(*ADMIN))
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "an unexpected error; the gateway's log has it"
    assert "Traceback" not in answer.text
    assert "steps" not in answer.text
