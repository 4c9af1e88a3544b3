"""The warm tier from a realistic mix of events on every stream and bucket the projector reads:
the rows it writes, and that replaying everything from sequence 0 (new durable consumers, a
verifying rebuild, a full rebuild) leaves every table exactly as it was."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from services.projector.tests.projector_testing import (
    Bus,
    dump,
    settings,
    settled,
    start_projector,
    unique,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.definitions import (
    Subscription,
    TaskTemplate,
    TriggerDefinition,
    definition_key,
)
from zhongshu.contracts.events import (
    AlertRaised,
    AuditRecorded,
    CallbackDelivered,
    CallbackDeliveryFailed,
    DeliveryTarget,
    ReplyDelivered,
    ReplyDeliveryFailed,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRequested,
    StepStarted,
    TaskCompleted,
    TaskFailed,
    TaskProgressed,
    TaskRequested,
    TaskStarted,
    TaskToolCalled,
    WorkflowRef,
)
from zhongshu.contracts.events.alerts import AlertActor, AlertStateChanged, alert_key
from zhongshu.contracts.hotcache import HOT_TTL_S, TaskStatus, task_status_key
from zhongshu.contracts.ids import schedule_fire_id
from zhongshu.devstack.testing import collect
from zhongshu.projector.rebuild import rebuild

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def fire_once(bus: Bus, tenant: str) -> str:
    """Fire a one-shot schedule now; returns the task id the firing's row is named by."""
    request = TaskRequested(
        task_id="nightly-template", tenant=tenant, requested_by="schedule:nightly",
        origin="schedule", prompt="Nightly report", schedule_id="nightly",
    )  # fmt: skip
    body = wire.encode(
        wire.make_envelope(
            request, id="schedule:nightly", source="test", tenant=tenant, time=at(20)
        )
    )
    when = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await bus.js.publish(
        subjects.schedule(tenant, "nightly"),
        body,
        headers={
            H.SCHEDULE: f"@at {when}",
            H.SCHEDULE_TARGET: subjects.schedule_fired(tenant, "nightly"),
        },
    )
    (firing,) = await collect(bus.js, subjects.task_requested(tenant), count=1, within_s=30)
    next_at = (firing.headers or {})[H.SCHEDULE_NEXT]
    return schedule_fire_id("nightly-template", next_at)


class Mix:
    """Two tenants' worth of tasks, runs, deliveries, audit, a schedule and definitions."""

    def __init__(self) -> None:
        self.acme = unique("acme")
        self.globex = unique("globex")
        self.fired = ""
        self.alert = AlertRaised(level="error", source="router", title="")

    async def publish(self, bus: Bus) -> None:
        await self._tasks(bus)
        await self._workflows(bus)
        await self._deliveries(bus)
        await self._audit(bus)
        await self._schedule(bus)
        await self._definitions(bus)
        await self._alerts(bus)

    async def _tasks(self, bus: Bus) -> None:
        a, g = self.acme, self.globex
        ev = subjects.task_event
        # An API task that streams, calls a tool and completes.
        await bus.send(
            subjects.task_requested(a),
            TaskRequested(
                task_id="api-1",
                tenant=a,
                requested_by="api:portal",
                origin="api",
                prompt="Summarize   yesterday's alerts",
                deliver_to=(
                    DeliveryTarget(kind="chat", app="acme-feishu", chat_id="oc_1"),
                    DeliveryTarget(kind="callback", url="https://hooks.example.com/z"),
                ),
            ),
            tenant=a,
            at=at(0),
        )
        await bus.send(
            ev(a, "api-1"),
            TaskStarted(task_id="api-1", attempt=1, worker="agent-1", origin="api",
                        requested_by="api:portal", title="Summarize yesterday's alerts"),
            tenant=a, at=at(1),
        )  # fmt: skip
        await bus.send(
            ev(a, "api-1"), TaskProgressed(task_id="api-1", seq=1, chunk="Four"), tenant=a, at=at(2)
        )
        await bus.send(
            ev(a, "api-1"),
            TaskToolCalled(task_id="api-1", seq=2, tool="task_status", arguments="{}",
                           result="ok", duration_ms=3),
            tenant=a, at=at(3),
        )  # fmt: skip
        await bus.send(
            ev(a, "api-1"),
            TaskCompleted(task_id="api-1", result_text="Four alerts, all resolved.",
                          result_data={"alerts": 4}, duration_ms=4000),
            tenant=a, at=at(5),
        )  # fmt: skip
        # A chat task (no TaskRequested: chat commands start with TaskStarted) that fails.
        await bus.send(
            ev(a, "chat-1"),
            TaskStarted(task_id="chat-1", origin="chat", requested_by="ou_user",
                        title="/task translate", conversation_id="oc_9"),
            tenant=a, at=at(6),
        )  # fmt: skip
        await bus.send(
            ev(a, "chat-1"),
            TaskFailed(task_id="chat-1", reason="model endpoint returned 429",
                       error_code="llm_rate_limited", retryable=True),
            tenant=a, at=at(8),
        )  # fmt: skip
        # A crashed agent ran a completed task again: Completed, then Started (attempt 2).
        await bus.send(
            subjects.task_requested(a),
            TaskRequested(task_id="again-1", tenant=a, requested_by="u", origin="api",
                          command="report", args=("weekly",)),
            tenant=a, at=at(9),
        )  # fmt: skip
        await bus.send(ev(a, "again-1"), TaskStarted(task_id="again-1"), tenant=a, at=at(10))
        await bus.send(
            ev(a, "again-1"), TaskCompleted(task_id="again-1", result_text="done"), tenant=a,
            at=at(12),
        )  # fmt: skip
        await bus.send(
            ev(a, "again-1"), TaskStarted(task_id="again-1", attempt=2), tenant=a, at=at(13)
        )
        # A schedule's firing, run to the end: a one-shot schedule fires into its `.fired`
        # subject, TASKS sources it as task.requested.<tenant> with Nats-Schedule-Next.
        fired = await fire_once(bus, g)
        self.fired = fired
        await bus.send(ev(g, fired), TaskStarted(task_id=fired, origin="schedule"), tenant=g,
                       at=at(21))  # fmt: skip
        await bus.send(ev(g, fired), TaskCompleted(task_id=fired, result_text="ok"), tenant=g,
                       at=at(22))  # fmt: skip
        # A cancelled command, and a queued workflow task.
        await bus.send(
            subjects.task_requested(g),
            TaskRequested(task_id="cmd-1", tenant=g, requested_by="u2", origin="api",
                          command="backup", args=("db", "--full")),
            tenant=g, at=at(23),
        )  # fmt: skip
        await bus.send(
            ev(g, "cmd-1"),
            TaskFailed(task_id="cmd-1", reason="cancelled by u2", error_code="cancelled"),
            tenant=g, at=at(24),
        )  # fmt: skip
        await bus.send(
            subjects.task_requested(g),
            TaskRequested(task_id="wf-1", tenant=g, requested_by="api:ops", origin="api",
                          workflow=WorkflowRef(name="incident", version="3"),
                          inputs={"incident": "INC-7"}),
            tenant=g, at=at(25),
        )  # fmt: skip

    async def _workflows(self, bus: Bus) -> None:
        a, g = self.acme, self.globex
        run = subjects.workflow_run
        await bus.send(
            run(a, "run-1"),
            RunStarted(run_id="run-1", tenant=a, workflow="incident", version=3,
                       inputs={"incident": "INC-1"}, requested_by="api:ops",
                       steps=("fetch", "summarize", "notify")),
            tenant=a, at=at(30),
        )  # fmt: skip
        # Step work shares the stream; the projector does not read it.
        await bus.send(
            subjects.workflow_step(a, "run-1", "fetch"),
            StepRequested(run_id="run-1", tenant=a, workflow="incident", step="fetch",
                          kind="collect"),
            tenant=a, at=at(30),
        )  # fmt: skip
        steps: list[tuple[Any, float]] = [
            (StepStarted(run_id="run-1", step="fetch"), 31),
            (StepCompleted(run_id="run-1", step="fetch", output={"status": 200}, duration_ms=900),
             32),
            (StepStarted(run_id="run-1", step="summarize"), 33),
            (StepFailed(run_id="run-1", step="summarize", reason="timeout", final=False,
                        duration_ms=1000), 34),
            (StepStarted(run_id="run-1", step="summarize", attempt=2), 35),
            (StepCompleted(run_id="run-1", step="summarize", output={"text": "disk"}, attempt=2),
             37),
            (StepStarted(run_id="run-1", step="notify"), 38),
            (StepCompleted(run_id="run-1", step="notify", duration_ms=100), 39),
            (RunCompleted(run_id="run-1", outputs={"summarize": {"text": "disk"}}), 40),
        ]  # fmt: skip
        for event, second in steps:
            await bus.send(run(a, "run-1"), event, tenant=a, at=at(second))
        await bus.send(
            run(g, "run-2"),
            RunStarted(run_id="run-2", tenant=g, workflow="backup", steps=("dump",)),
            tenant=g, at=at(41),
        )  # fmt: skip
        await bus.send(run(g, "run-2"), StepStarted(run_id="run-2", step="dump"), tenant=g,
                       at=at(42))  # fmt: skip
        await bus.send(
            run(g, "run-2"), StepFailed(run_id="run-2", step="dump", reason="HTTP 404"),
            tenant=g, at=at(43),
        )  # fmt: skip
        await bus.send(
            run(g, "run-2"), RunFailed(run_id="run-2", reason="step dump: HTTP 404", step="dump"),
            tenant=g, at=at(44),
        )  # fmt: skip

    async def _deliveries(self, bus: Bus) -> None:
        a, g = self.acme, self.globex
        await bus.send(
            subjects.delivery("delivered", "feishu", a),
            ReplyDelivered(reply_id="r-1", platform="feishu", delivered_at=at(50),
                           platform_message_id="om_1", app="acme-feishu", chat_id="oc_1"),
            tenant=a, at=at(50),
        )  # fmt: skip
        await bus.send(
            subjects.delivery("ambiguous", "dingtalk", g),
            ReplyDeliveryFailed(reply_id="r-2", platform="dingtalk", reason="timeout after send",
                                ambiguous=True, app="globex-ding", chat_id="cid_2"),
            tenant=g, at=at(51),
        )  # fmt: skip
        # Failed, retried, delivered: the newest outcome wins.
        await bus.send(
            subjects.delivery("failed", "feishu", a),
            ReplyDeliveryFailed(reply_id="r-3", platform="feishu", reason="HTTP 500",
                                code="500", retryable=True, chunk_index=1),
            tenant=a, at=at(52),
        )  # fmt: skip
        await bus.send(
            subjects.delivery("delivered", "feishu", a),
            ReplyDelivered(reply_id="r-3", platform="feishu", delivered_at=at(53), attempts=2,
                           chunk_index=1),
            tenant=a, at=at(53),
        )  # fmt: skip
        await bus.send(
            subjects.delivery("delivered", "callback", a),
            CallbackDelivered(subscription_id="ops", tenant=a, event_id="api-1:completed",
                              event_type="zhongshu.task.task_completed.v1", status_code=204,
                              delivered_at=at(54)),
            tenant=a, at=at(54),
        )  # fmt: skip
        await bus.send(
            subjects.delivery("failed", "callback", g),
            CallbackDeliveryFailed(subscription_id="crm", tenant=g, event_id="cmd-1:failed",
                                   event_type="zhongshu.task.task_failed.v1", reason="HTTP 410",
                                   status_code=410, attempts=5),
            tenant=g, at=at(55),
        )  # fmt: skip

    async def _audit(self, bus: Bus) -> None:
        a, g = self.acme, self.globex
        await bus.send(
            subjects.audit(a, "access"),
            AuditRecorded(actor="ou_x", action="chat.denied", target="app:acme-feishu",
                          outcome="denied", tenant=a, detail="not in access.users"),
            tenant=a, at=at(60),
        )  # fmt: skip
        await bus.send(
            subjects.audit(g, "config"),
            AuditRecorded(actor="operator", action="config.pushed", target="config",
                          outcome="succeeded", tenant=g, labels={"revision": "7"}),
            tenant=g, at=at(61),
        )  # fmt: skip

    async def _alerts(self, bus: Bus) -> None:
        # A router alert raised twice, acknowledged, then resolved by the watchdog (cleared).
        self.alert = AlertRaised(level="error", source="router", title="printer on fire",
                                 dedupe_key=unique("printer"))  # fmt: skip
        key = alert_key(self.alert)
        state = functools.partial(
            AlertStateChanged, key=key, level="error", source="router", title="printer on fire",
            raised_at=at(80), episode=1,
        )  # fmt: skip
        admin = AlertActor(id="ou_admin", name="Ada", platform="feishu", app="acme-feishu")
        await bus.send(subjects.alert("error", "router"), self.alert, tenant="", at=at(80))
        await bus.send(subjects.alert_state(key), state(state="raised", reason="raised"),
                       tenant="", at=at(80))  # fmt: skip
        await bus.send(subjects.alert("error", "router"), self.alert, tenant="", at=at(81))
        await bus.send(subjects.alert_state(key),
                       state(state="acknowledged", actor=admin, occurrences=2),
                       tenant="", at=at(82))  # fmt: skip
        await bus.send(subjects.alert_state(key),
                       state(state="resolved", reason="the condition cleared", occurrences=2),
                       tenant="", at=at(83))  # fmt: skip

    async def _schedule(self, bus: Bus) -> None:
        a = self.acme
        body = wire.encode(
            wire.make_envelope(
                TaskRequested(task_id="sched-acme-daily", tenant=a, requested_by="schedule:daily",
                              origin="schedule", prompt="Daily digest", schedule_id="daily"),
                id="schedule:daily", source="zhongshu/gateway", tenant=a, time=at(70),
            )
        )  # fmt: skip
        await bus.js.publish(
            subjects.schedule(a, "daily"),
            body,
            headers={
                H.SCHEDULE: "0 0 2 1 1 *",  # 02:00 on January 1st: never during the test
                H.SCHEDULE_TARGET: subjects.schedule_fired(a, "daily"),
                H.SCHEDULE_TIME_ZONE: "Asia/Shanghai",
            },
        )

    async def _definitions(self, bus: Bus) -> None:
        a, g = self.acme, self.globex
        triggers = await bus.js.key_value("triggers")
        subscriptions = await bus.js.key_value("subscriptions")

        def trigger(tenant: str, id: str, condition: str) -> bytes:
            template = TaskTemplate(prompt="Door {{event.id}}")
            return msgspec.json.encode(
                TriggerDefinition(
                    id=id, tenant=tenant, subject="events.iot.>", condition=condition, task=template
                )
            )

        await triggers.put(definition_key(a, "door"), trigger(a, "door", "data.open"))
        await triggers.put(definition_key(g, "temp"), trigger(g, "temp", "data.c > 30"))
        await triggers.put(definition_key(g, "temp"), trigger(g, "temp", "data.c > 35"))
        await triggers.put(definition_key(g, "old"), trigger(g, "old", ""))
        await triggers.delete(definition_key(g, "old"))
        await subscriptions.put(
            definition_key(a, "ops"),
            msgspec.json.encode(Subscription(id="ops", tenant=a, url="https://hooks.example.com")),
        )


async def rows(pool: asyncpg.Pool, query: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(query, *args)]


async def test_a_realistic_mix_is_projected_and_replaying_it_changes_no_table(
    bus: Bus, database: str, redis_url: str, redis: Redis
) -> None:
    mix = Mix()
    await mix.publish(bus)
    config = settings(bus.url, database, redis_url)
    service = await start_projector(config)
    try:
        pool: asyncpg.Pool = service.deps.pool
        await settled(service, pool)
        await check_rows(pool, mix)
        await check_hot_tier(redis, mix)
        before = await dump_all(pool)
    finally:
        await service.stop()

    # Replay every stream from sequence 0: new durable consumers, and the mirrors watch again.
    for name in ("projector-tasks", "projector-workflows", "projector-deliveries",
                 "projector-audit", "projector-schedules", "projector-alerts"):  # fmt: skip
        stream = name.removeprefix("projector-").upper()
        await bus.js.delete_consumer(stream, name)
    service = await start_projector(config)
    try:
        pool = service.deps.pool
        await settled(service, pool)
        replays = {spec.durable: await service.js.consumer_info(spec.stream, spec.durable)
                   for spec in service.consumer_specs}  # fmt: skip
        assert replays["projector-tasks"].delivered.stream_seq > 0
        assert await dump_all(pool) == before

        # The same through a verifying rebuild: every message again, no row changed.
        reports = await rebuild(service.js, pool, truncate=False)
        assert {r.source for r in reports} == {
            "TASKS", "WORKFLOWS", "DELIVERIES", "AUDIT", "SCHEDULES", "ALERTS", "KV_triggers",
            "KV_subscriptions",
        }  # fmt: skip
        assert all(r.messages > 0 for r in reports)
        assert [(r.source, r.rows.total(), r.changed_applied, r.failed) for r in reports] == [
            (r.source, 0, 0, 0) for r in reports
        ]
        assert await dump_all(pool) == before

        # And from empty tables: the same rows again (only the offsets' bookkeeping time moves).
        reports = await rebuild(service.js, pool, truncate=True)
        assert all(r.failed == 0 and r.rows.total() > 0 for r in reports)
        assert await dump_all(pool, offsets_time=False) == {
            **before,
            "projection_offsets": await offsets(pool),
        }
    finally:
        await service.stop()


async def dump_all(pool: asyncpg.Pool, *, offsets_time: bool = True) -> dict[str, list[str]]:
    async with pool.acquire() as conn:
        tables = await dump(conn)
    if not offsets_time:
        tables["projection_offsets"] = await offsets(pool)
    return tables


async def offsets(pool: asyncpg.Pool) -> list[str]:
    found = await pool.fetch("SELECT stream, last_seq FROM projection_offsets ORDER BY stream")
    return [f"{r['stream']}={r['last_seq']}" for r in found]


async def check_rows(pool: asyncpg.Pool, mix: Mix) -> None:
    a, g = mix.acme, mix.globex
    tasks = {
        (r["tenant"], r["task_id"]): r
        for r in await rows(pool, "SELECT * FROM tasks WHERE tenant = ANY($1)", [a, g])
    }
    fired = mix.fired
    assert set(tasks) == {
        (a, "api-1"), (a, "chat-1"), (a, "again-1"), (g, fired), (g, "cmd-1"), (g, "wf-1"),
    }  # fmt: skip
    api = tasks[(a, "api-1")]
    assert api["status"] == "completed"
    assert api["origin"] == "api"
    assert api["requested_by"] == "api:portal"
    assert api["title"] == "Summarize yesterday's alerts"
    assert api["prompt"] == "Summarize   yesterday's alerts"
    assert api["result_text"] == "Four alerts, all resolved."
    assert json.loads(api["result_data"]) == {"alerts": 4}
    assert json.loads(api["deliver_to"]) == [
        {"kind": "chat", "app": "acme-feishu", "chat_id": "oc_1"},
        {"kind": "callback", "url": "https://hooks.example.com/z"},
    ]
    assert (api["created_at"], api["started_at"], api["finished_at"]) == (at(0), at(1), at(5))
    assert api["duration_ms"] == 4000
    assert api["attempts"] == 1
    assert api["updated_at"] == at(5)

    chat = tasks[(a, "chat-1")]
    assert (chat["status"], chat["origin"], chat["requested_by"]) == ("failed", "chat", "ou_user")
    assert (chat["reason"], chat["error_code"], chat["retryable"]) == (
        "model endpoint returned 429", "llm_rate_limited", True,
    )  # fmt: skip
    assert chat["conversation_id"] == "oc_9"
    assert chat["duration_ms"] == 2000

    again = tasks[(a, "again-1")]  # the later TaskStarted did not reopen it
    assert (again["status"], again["attempts"], again["result_text"]) == ("completed", 2, "done")
    assert again["started_at"] == at(10)
    assert again["finished_at"] == at(12)
    assert (again["command"], json.loads(again["args"])) == ("report", ["weekly"])

    nightly = tasks[(g, fired)]
    assert (nightly["status"], nightly["origin"], nightly["schedule_id"]) == (
        "completed", "schedule", "nightly",
    )  # fmt: skip
    assert tasks[(g, "cmd-1")]["status"] == "cancelled"
    workflow = tasks[(g, "wf-1")]
    assert (workflow["status"], workflow["workflow"], workflow["workflow_version"]) == (
        "queued", "incident", "3",
    )  # fmt: skip
    assert json.loads(workflow["inputs"]) == {"incident": "INC-7"}

    history = await rows(
        pool, "SELECT type, data FROM task_events WHERE tenant = $1 AND task_id = 'api-1' "
        "ORDER BY stream_seq", a,
    )  # fmt: skip
    assert [h["type"].split(".")[2] for h in history] == [
        "task_requested", "task_started", "task_progressed", "task_tool_called", "task_completed",
    ]  # fmt: skip
    assert json.loads(history[2]["data"])["chunk"] == "Four"

    runs = {
        r["run_id"]: r
        for r in await rows(pool, "SELECT * FROM workflow_runs WHERE tenant = ANY($1)", [a, g])
    }
    assert set(runs) == {"run-1", "run-2"}
    assert (runs["run-1"]["status"], runs["run-1"]["workflow"], runs["run-1"]["version"]) == (
        "completed", "incident", 3,
    )  # fmt: skip
    assert json.loads(runs["run-1"]["steps"]) == ["fetch", "summarize", "notify"]
    assert runs["run-1"]["duration_ms"] == 10_000
    assert (runs["run-2"]["status"], runs["run-2"]["failed_step"]) == ("failed", "dump")
    steps = {
        (r["run_id"], r["step"]): r
        for r in await rows(pool, "SELECT * FROM workflow_steps WHERE tenant = ANY($1)", [a, g])
    }
    assert {k: (v["status"], v["attempt"]) for k, v in steps.items()} == {
        ("run-1", "fetch"): ("completed", 1),
        ("run-1", "summarize"): ("completed", 2),
        ("run-1", "notify"): ("completed", 1),
        ("run-2", "dump"): ("failed", 1),
    }
    summarize = steps[("run-1", "summarize")]
    assert (summarize["started_at"], summarize["finished_at"], summarize["duration_ms"]) == (
        at(35), at(37), 2000,
    )  # fmt: skip
    assert json.loads(summarize["output"]) == {"text": "disk"}
    assert summarize["reason"] is None

    deliveries = {
        (r["reply_id"], r["chunk_index"]): r
        for r in await rows(pool, "SELECT * FROM deliveries WHERE tenant = ANY($1)", [a, g])
    }
    assert {k: (v["status"], v["tenant"]) for k, v in deliveries.items()} == {
        ("r-1", 0): ("delivered", a),
        ("r-2", 0): ("ambiguous", g),
        ("r-3", 1): ("delivered", a),
    }
    assert deliveries[("r-3", 1)]["attempts"] == 2
    assert deliveries[("r-3", 1)]["reason"] is None
    assert deliveries[("r-1", 0)]["platform_message_id"] == "om_1"
    callbacks = await rows(
        pool, "SELECT tenant, subscription_id, status, status_code, attempts FROM "
        "callback_deliveries WHERE tenant = ANY($1) ORDER BY tenant", [a, g],
    )  # fmt: skip
    assert callbacks == [
        {"tenant": a, "subscription_id": "ops", "status": "delivered", "status_code": 204,
         "attempts": 1},
        {"tenant": g, "subscription_id": "crm", "status": "failed", "status_code": 410,
         "attempts": 5},
    ]  # fmt: skip

    audit = await rows(
        pool, "SELECT tenant, kind, actor, action, outcome, data FROM audit "
        "WHERE tenant = ANY($1) ORDER BY stream_seq", [a, g],
    )  # fmt: skip
    assert [(r["tenant"], r["kind"], r["action"], r["outcome"]) for r in audit] == [
        (a, "access", "chat.denied", "denied"),
        (g, "config", "config.pushed", "succeeded"),
    ]
    assert json.loads(audit[1]["data"])["labels"] == {"revision": "7"}

    key = alert_key(mix.alert)
    (alert,) = await rows(pool, "SELECT * FROM alerts WHERE key = $1", key)
    assert (alert["episode"], alert["state"], alert["occurrences"]) == (1, "resolved", 2)
    assert (alert["acknowledged_by"], alert["resolved_by"]) == ("ou_admin", "watchdog")
    assert alert["acknowledged_at"] == at(82)
    events = await rows(
        pool, "SELECT kind, state, actor_id, actor_name FROM alert_events WHERE key = $1 "
        "ORDER BY stream_seq", key,
    )  # fmt: skip
    assert [tuple(e.values()) for e in events] == [
        ("raise", None, None, None), ("change", "raised", None, None), ("raise", None, None, None),
        ("change", "acknowledged", "ou_admin", "Ada"), ("change", "resolved", None, None),
    ]  # fmt: skip

    (schedule,) = await rows(pool, "SELECT * FROM schedules WHERE tenant = $1", a)
    assert (schedule["schedule_id"], schedule["spec"], schedule["time_zone"]) == (
        "daily", "0 0 2 1 1 *", "Asia/Shanghai",
    )  # fmt: skip
    assert schedule["target"] == subjects.schedule_fired(a, "daily")
    assert json.loads(schedule["template"])["data"]["prompt"] == "Daily digest"
    assert schedule["deleted"] is False

    triggers = {
        (r["tenant"], r["trigger_id"]): r
        for r in await rows(pool, "SELECT * FROM triggers WHERE tenant = ANY($1)", [a, g])
    }
    assert {k: v["deleted"] for k, v in triggers.items()} == {
        (a, "door"): False, (g, "temp"): False, (g, "old"): True,
    }  # fmt: skip
    assert json.loads(triggers[(g, "temp")]["definition"])["condition"] == "data.c > 35"
    assert json.loads(triggers[(g, "old")]["definition"])["id"] == "old"  # the last definition
    (subscription,) = await rows(pool, "SELECT * FROM subscriptions WHERE tenant = $1", a)
    assert json.loads(subscription["definition"])["url"] == "https://hooks.example.com"


async def check_hot_tier(redis: Redis, mix: Mix) -> None:
    raw = await redis.get(task_status_key(mix.acme, "api-1"))
    assert raw is not None
    status = msgspec.json.decode(raw, type=TaskStatus)
    assert (status.status, status.title, status.result_text) == (
        "completed", "Summarize yesterday's alerts", "Four alerts, all resolved.",
    )  # fmt: skip
    assert status.updated_at == at(5).timestamp()
    ttl = await redis.ttl(task_status_key(mix.acme, "api-1"))
    # The event is almost an hour old: the key lives 7 days from it, not from the write.
    age = datetime.now(UTC).timestamp() - status.updated_at
    assert HOT_TTL_S - age - 60 < ttl <= HOT_TTL_S - age + 1
    failed = msgspec.json.decode(await redis.get(task_status_key(mix.acme, "chat-1")) or b"",
                                 type=TaskStatus)  # fmt: skip
    assert (failed.status, failed.detail) == ("failed", "model endpoint returned 429")
    cancelled = await redis.get(task_status_key(mix.globex, "cmd-1"))
    assert cancelled is not None
    assert b'"cancelled"' in cancelled


pytestmark = pytest.mark.timeout(300)


async def test_a_rebuild_under_a_running_projector_loses_and_doubles_nothing(
    bus: Bus, database: str, redis_url: str
) -> None:
    mix = Mix()
    await mix.publish(bus)
    service = await start_projector(settings(bus.url, database, redis_url))
    try:
        pool: asyncpg.Pool = service.deps.pool
        await settled(service, pool)
        tenant = unique("busy")

        async def keep_publishing() -> None:
            for n in range(200):
                task_id = f"busy-{n % 20}"
                if n < 20:
                    request = TaskRequested(
                        task_id=task_id, tenant=tenant, requested_by="u", origin="api", prompt="p"
                    )
                    await bus.send(subjects.task_requested(tenant), request, tenant=tenant)
                else:
                    progress = TaskProgressed(task_id=task_id, seq=n, chunk=str(n))
                    await bus.send(subjects.task_event(tenant, task_id), progress, tenant=tenant)

        publishing = asyncio.create_task(keep_publishing())
        reports = await rebuild(service.js, pool, only="TASKS")
        await publishing
        await settled(service, pool)
        assert reports[0].failed == 0
        during = await dump_all(pool, offsets_time=False)
        rows = await pool.fetch(
            "SELECT prompt, status FROM tasks WHERE tenant = $1 ORDER BY task_id", tenant
        )
        assert [(r["prompt"], r["status"]) for r in rows] == [("p", "running")] * 20

        await rebuild(service.js, pool)  # from empty tables, with nothing arriving meanwhile
        assert await dump_all(pool, offsets_time=False) == during
        info = await service.js.consumer_info("TASKS", "projector-tasks")
        assert info.num_redelivered == 0
    finally:
        await service.stop()
