"""Schedules are JetStream message schedules and nothing else: creating one stores a message on
`schedule.<tenant>.<id>` that nats-server fires into TASKS; deleting it purges the subject and
the firings stop. Next fire times are computed in the schedule's own time zone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nats.js.client import JetStreamContext

from services.gateway.tests.gateway_testing import Api
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import TaskRequested
from zhongshu.devstack.testing import collect

ADMIN = ("admin",)


def schedule(schedule_id: str, spec: str, **extra: Any) -> dict[str, Any]:
    return {"id": schedule_id, "schedule": spec, "task": {"prompt": f"run {schedule_id}"}, **extra}


async def test_an_every_second_schedule_creates_tasks_until_it_is_deleted(
    api: Api, js: JetStreamContext
) -> None:
    created = await api.client.post(
        "/api/v1/schedules", json=schedule("heartbeat", "@every 1s"), headers=api.auth(*ADMIN)
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/schedules/heartbeat"

    fired = await collect(js, subjects.task_requested(api.tenant), count=2, within_s=15)
    assert len(fired) == 2
    for msg in fired:
        request = wire.decode(msg.data, TaskRequested).data
        assert (request.origin, request.schedule_id, request.tenant) == (
            "schedule",
            "heartbeat",
            api.tenant,
        )
        assert request.prompt == "run heartbeat"
        assert request.requested_by == "schedule:heartbeat"
        assert (msg.headers or {})[H.SCHEDULE_NEXT]  # what the agent names each firing's task by

    deleted = await api.client.delete("/api/v1/schedules/heartbeat", headers=api.auth(*ADMIN))
    assert deleted.status_code == 204
    await asyncio.sleep(1.5)  # a firing already under way may still land
    before = len(await collect(js, subjects.task_requested(api.tenant), within_s=1))
    await asyncio.sleep(3)
    after = len(await collect(js, subjects.task_requested(api.tenant), within_s=1))
    assert after == before
    gone = await api.client.get("/api/v1/schedules/heartbeat", headers=api.auth(*ADMIN))
    assert gone.status_code == 404


def expected_next(hour: int, minute: int, zone: str, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(zone))
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (candidate + timedelta(days=1)).replace(hour=hour, minute=minute)
    return candidate.astimezone(UTC)


async def test_a_cron_schedule_is_stored_as_nats_reads_it_and_fires_next_in_its_zone(
    api: Api, js: JetStreamContext
) -> None:
    now = datetime.now(UTC)
    answer = await api.client.post(
        "/api/v1/schedules",
        json=schedule("morning", "30 9 * * *", time_zone="Asia/Shanghai"),
        headers=api.auth(*ADMIN),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["schedule"] == "0 30 9 * * *"  # seconds first, as nats-server reads cron
    assert body["time_zone"] == "Asia/Shanghai"
    next_fire = datetime.fromisoformat(body["next_fire_at"])
    assert next_fire == expected_next(9, 30, "Asia/Shanghai", now)
    assert (next_fire.hour, next_fire.minute) == (1, 30)  # 09:30 in UTC+8

    stored = await js.get_last_msg(streams.SCHEDULES.name, subjects.schedule(api.tenant, "morning"))
    assert stored.headers is not None
    assert stored.headers[H.SCHEDULE] == "0 30 9 * * *"
    assert stored.headers[H.SCHEDULE_TARGET] == subjects.schedule_fired(api.tenant, "morning")
    assert stored.headers[H.SCHEDULE_TIME_ZONE] == "Asia/Shanghai"
    template = wire.decode(stored.data or b"", TaskRequested).data
    assert (template.task_id, template.schedule_id, template.origin) == (
        "morning",
        "morning",
        "schedule",
    )

    # Another zone, with daylight saving time: the offset of the day it fires is used.
    other = await api.client.post(
        "/api/v1/schedules",
        json=schedule("closing", "0 16 * * *", time_zone="America/New_York"),
        headers=api.auth(*ADMIN),
    )
    assert datetime.fromisoformat(other.json()["next_fire_at"]) == expected_next(
        16, 0, "America/New_York", now
    )


async def test_schedules_are_listed_read_replaced_and_conflicts_refused(api: Api) -> None:
    auth = api.auth(*ADMIN)
    for spec in ("@hourly", "@every 90s"):
        name = "hourly" if spec == "@hourly" else "ninety"
        answer = await api.client.post("/api/v1/schedules", json=schedule(name, spec), headers=auth)
        assert answer.status_code == 201, answer.text
    listed = (await api.client.get("/api/v1/schedules", headers=auth)).json()["items"]
    assert [s["id"] for s in listed] == ["hourly", "ninety"]
    ninety = listed[1]
    first = datetime.fromisoformat(ninety["next_fire_at"]) - datetime.fromisoformat(
        ninety["created_at"]
    )
    assert timedelta(0) < first <= timedelta(seconds=90)
    assert listed[0]["task"] == {"prompt": "run hourly"}

    again = await api.client.post(
        "/api/v1/schedules", json=schedule("hourly", "@daily"), headers=auth
    )
    assert again.status_code == 409
    replaced = await api.client.put(
        "/api/v1/schedules/hourly",
        json={"schedule": "@daily", "time_zone": "Europe/Paris", "task": {"command": "report"}},
        headers=auth,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] > listed[0]["version"]
    read = (await api.client.get("/api/v1/schedules/hourly", headers=auth)).json()
    assert (read["schedule"], read["time_zone"], read["task"]) == (
        "@daily",
        "Europe/Paris",
        {"command": "report"},
    )
    missing = await api.client.put(
        "/api/v1/schedules/nothing",
        json={"schedule": "@daily", "task": {"prompt": "x"}},
        headers=auth,
    )
    assert missing.status_code == 404
    # Other tenants see none of it.
    theirs = await api.client.get("/api/v1/schedules", headers=api.auth(*ADMIN, tenant="elsewhere"))
    assert theirs.json()["items"] == []


async def test_invalid_schedules_are_422_and_nothing_is_stored(
    api: Api, js: JetStreamContext
) -> None:
    cases = [
        schedule("a", "* * *"),
        schedule("b", "61 * * * *"),
        schedule("c", "@every 10ms"),
        schedule("d", "@every soon"),
        schedule("e", "@fortnightly"),
        schedule("f", "0 9 * * *", time_zone="Mars/Olympus"),
        schedule("g", "@every 1m", time_zone="Asia/Shanghai"),
        {"id": "h", "schedule": "@daily", "task": {}},
        schedule("Bad.Id", "@daily"),
    ]
    for body in cases:
        answer = await api.client.post("/api/v1/schedules", json=body, headers=api.auth(*ADMIN))
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    info = await js.stream_info(
        streams.SCHEDULES.name, subjects_filter=subjects.schedules_for(api.tenant)
    )
    assert not info.state.subjects
