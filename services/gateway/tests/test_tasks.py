"""Tasks over real HTTP, NATS, Redis and PostgreSQL: what a request puts on the bus (once),
what a read answers from which tier, and how bad input and cancellation are answered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from nats.js.client import JetStreamContext

from services.gateway.tests.gateway_testing import Api, StartGateway
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import TaskFailed, TaskRequested
from zhongshu.devstack.testing import collect

WRITE = ("tasks:write", "tasks:read")


async def requested(js: JetStreamContext, tenant: str, *, within_s: float = 2) -> list[Any]:
    return await collect(js, subjects.task_requested(tenant), within_s=within_s)


async def test_a_task_is_accepted_once_it_is_on_the_bus_and_can_be_read_at_once(
    api: Api, js: JetStreamContext
) -> None:
    body = {
        "prompt": "summarize last night's alerts",
        "deliver_to": [
            {"kind": "chat", "app": "acme-feishu", "chat_id": "oc_ops"},
            {"kind": "callback", "url": "https://example.com/hook"},
        ],
        "timeout_s": 120,
    }
    answer = await api.client.post("/api/v1/tasks", json=body, headers=api.auth(*WRITE))
    assert answer.status_code == 202, answer.text
    task = answer.json()
    assert task["status"] == "queued"
    assert answer.headers["location"] == f"/api/v1/tasks/{task['task_id']}"
    assert "ratelimit-remaining" in answer.headers

    [msg] = await requested(js, api.tenant)
    assert msg.headers[H.MSG_ID] == task["task_id"]
    env = wire.decode(msg.data, TaskRequested)
    assert env.id == task["task_id"]
    request = env.data
    assert (request.task_id, request.tenant, request.origin) == (task["task_id"], api.tenant, "api")
    assert request.prompt == body["prompt"]
    assert request.requested_by == "api:test-client"
    assert request.timeout_s == 120
    assert [t.kind for t in request.deliver_to] == ["chat", "callback"]
    assert request.deliver_to[1].url == "https://example.com/hook"

    # Queued in the hot tier before any agent has seen it.
    read = await api.client.get(answer.headers["location"], headers=api.auth("tasks:read"))
    assert read.status_code == 200
    assert read.json()["status"] == "queued"
    assert read.json()["source"] == "hot"


async def test_the_same_idempotency_key_twice_is_the_same_task_published_once(
    api: Api, js: JetStreamContext
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    body = {"command": "report", "args": ["daily"]}
    first = await api.client.post("/api/v1/tasks", json=body, headers={**api.auth(*WRITE), **key})
    second = await api.client.post(
        "/api/v1/tasks",
        json={"args": ["daily"], "command": "report"},  # same body, other field order
        headers={**api.auth(*WRITE), **key},
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert len(await requested(js, api.tenant)) == 1

    reused = await api.client.post(
        "/api/v1/tasks",
        json={"command": "report", "args": ["weekly"]},
        headers={**api.auth(*WRITE), **key},
    )
    assert reused.status_code == 422
    assert reused.headers["content-type"] == "application/problem+json"
    assert reused.json()["type"] == "urn:zhongshu:problem:idempotency-key-reused"
    assert len(await requested(js, api.tenant)) == 1

    # Keys are per tenant: another tenant's request with the same key is its own task.
    elsewhere = api.auth(*WRITE, tenant="x" + api.tenant[1:])
    other = await api.client.post("/api/v1/tasks", json=body, headers={**elsewhere, **key})
    assert other.status_code == 202
    assert other.json()["task_id"] != first.json()["task_id"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "body"),
        ({"prompt": "a", "command": "b"}, "body"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "hi", "deliverTo": []}, "deliverTo"),
        ({"prompt": "hi", "deliver_to": [{"kind": "callback", "url": "ftp://x.example"}]}, "url"),
        ({"prompt": "hi", "deliver_to": [{"kind": "pigeon"}]}, "deliver_to"),
        ({"command": "Not A Command"}, "command"),
        ({"prompt": "hi", "args": ["x"]}, "body"),
        ({"prompt": "hi", "timeout_s": -1}, "timeout_s"),
    ],
)
async def test_bad_input_is_a_422_problem_and_nothing_is_published(
    api: Api, js: JetStreamContext, body: dict[str, Any], where: str
) -> None:
    answer = await api.client.post("/api/v1/tasks", json=body, headers=api.auth(*WRITE))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 422
    assert problem["title"]
    assert problem["detail"]
    assert any(where in [str(p) for p in e["loc"]] for e in problem["errors"]), problem
    assert await requested(js, api.tenant, within_s=0.5) == []


async def test_a_body_that_is_not_json_is_a_422_problem(api: Api, js: JetStreamContext) -> None:
    answer = await api.client.post(
        "/api/v1/tasks",
        content=b"{not json",
        headers={**api.auth(*WRITE), "content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert await requested(js, api.tenant, within_s=0.5) == []


async def test_a_workflow_task_must_name_a_workflow_of_the_tenant(
    api: Api, js: JetStreamContext
) -> None:
    answer = await api.client.post(
        "/api/v1/tasks",
        json={"workflow": {"name": "nowhere"}, "inputs": {"a": 1}},
        headers=api.auth(*WRITE),
    )
    assert answer.status_code == 422
    assert answer.json()["type"] == "urn:zhongshu:problem:unknown-workflow"
    assert await requested(js, api.tenant, within_s=0.5) == []


async def insert_task(warm: asyncpg.Connection, tenant: str, task_id: str, **values: Any) -> None:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "tenant": tenant,
        "task_id": task_id,
        "status": "completed",
        "origin": "api",
        "requested_by": "api:someone",
        "title": "what was asked",
        "prompt": "what was asked",
        "result_text": "the answer",
        "created_at": now,
        "updated_at": now,
        "last_seq": 1,
        **values,
    }
    columns = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await warm.execute(f"INSERT INTO tasks ({columns}) VALUES ({params})", *row.values())


async def test_a_task_no_longer_hot_is_read_from_the_warm_tier(
    api: Api, warm: asyncpg.Connection
) -> None:
    await insert_task(warm, api.tenant, "old-task", duration_ms=1234, attempts=1)
    answer = await api.client.get("/api/v1/tasks/old-task", headers=api.auth("tasks:read"))
    assert answer.status_code == 200, answer.text
    task = answer.json()
    assert task["source"] == "warm"
    assert (task["status"], task["result_text"], task["duration_ms"]) == (
        "completed",
        "the answer",
        1234,
    )
    missing = await api.client.get("/api/v1/tasks/nothing-here", headers=api.auth("tasks:read"))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_tasks_are_listed_newest_first_in_pages_and_filtered(
    api: Api, warm: asyncpg.Connection
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        await insert_task(
            warm,
            api.tenant,
            f"task-{i}",
            created_at=start + timedelta(minutes=i),
            status="failed" if i % 2 else "completed",
            origin="schedule" if i == 4 else "api",
        )
    auth = api.auth("tasks:read")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/api/v1/tasks", params=params, headers=auth)).json()
        seen += [t["task_id"] for t in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == [f"task-{i}" for i in (4, 3, 2, 1, 0)]

    failed = (await api.client.get("/api/v1/tasks?status=failed", headers=auth)).json()
    assert [t["task_id"] for t in failed["items"]] == ["task-3", "task-1"]
    scheduled = (await api.client.get("/api/v1/tasks?origin=schedule", headers=auth)).json()
    assert [t["task_id"] for t in scheduled["items"]] == ["task-4"]
    since = (start + timedelta(minutes=3)).isoformat()
    recent = (await api.client.get("/api/v1/tasks", params={"since": since}, headers=auth)).json()
    assert [t["task_id"] for t in recent["items"]] == ["task-4", "task-3"]

    bad = await api.client.get("/api/v1/tasks?cursor=garbage", headers=auth)
    assert bad.status_code == 422
    assert bad.json()["type"] == "urn:zhongshu:problem:invalid-cursor"


async def test_cancelling_records_the_end_in_the_task_lifecycle(
    api: Api, js: JetStreamContext, warm: asyncpg.Connection
) -> None:
    created = await api.client.post(
        "/api/v1/tasks", json={"prompt": "slow"}, headers=api.auth(*WRITE)
    )
    task_id = created.json()["task_id"]
    answer = await api.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=api.auth(*WRITE))
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "cancelled"

    [msg] = await collect(js, subjects.task_event(api.tenant, task_id), count=1, within_s=5)
    event = wire.decode(msg.data, TaskFailed).data
    assert (event.task_id, event.error_code, event.retryable) == (task_id, "cancelled", False)
    read = await api.client.get(f"/api/v1/tasks/{task_id}", headers=api.auth("tasks:read"))
    assert read.json()["status"] == "cancelled"

    again = await api.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=api.auth(*WRITE))
    assert again.status_code == 409
    await insert_task(warm, api.tenant, "done-task")
    finished = await api.client.post("/api/v1/tasks/done-task/cancel", headers=api.auth(*WRITE))
    assert finished.status_code == 409
    unknown = await api.client.post("/api/v1/tasks/nope/cancel", headers=api.auth(*WRITE))
    assert unknown.status_code == 404
    # Only the one cancellation is on the task's subject.
    assert len(await collect(js, subjects.task_event(api.tenant, task_id), within_s=0.5)) == 1


async def test_with_postgresql_down_tasks_are_still_accepted_and_reads_are_503(
    start_gateway: StartGateway, js: JetStreamContext
) -> None:
    api = await start_gateway(postgres_url="postgresql://postgres@127.0.0.1:9/nowhere")
    created = await api.client.post(
        "/api/v1/tasks", json={"prompt": "still works"}, headers=api.auth(*WRITE)
    )
    assert created.status_code == 202
    assert len(await requested(js, api.tenant)) == 1
    listed = await api.client.get("/api/v1/tasks", headers=api.auth(*WRITE))
    assert listed.status_code == 503
    assert listed.headers["content-type"] == "application/problem+json"
    assert "PostgreSQL" in listed.json()["detail"]
    assert "nowhere" not in listed.text  # no URL, no credentials
    ready = await api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"] is False


async def test_requests_are_counted_by_route_template(api: Api) -> None:
    await api.client.get("/api/v1/tasks/some-task", headers=api.auth("tasks:read"))
    exposition = (await api.client.get("/metrics")).text
    assert 'route="/api/v1/tasks/{task_id}"' in exposition
    assert "some-task" not in exposition
