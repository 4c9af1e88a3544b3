"""Async notifications on real NATS and Redis against a receiver that checks signatures: task and
run events reach the tenant's matching subscriptions and the task's own callback URLs, signed, at
least once per (target, event), retried with backoff, and every outcome is in the delivery log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from services.notifier.tests.notifier_testing import Bus
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.definitions import (
    TASK_CALLBACKS_ID,
    Subscription,
    definition_key,
    sign_callback,
    subscription_secret,
    verify_callback,
)
from zhongshu.contracts.events import (
    AuditRecorded,
    CallbackDelivered,
    CallbackDeliveryFailed,
    DeliveryTarget,
    Event,
    RunCompleted,
    RunStarted,
    TaskCompleted,
    TaskRequested,
    TaskStarted,
)
from zhongshu.contracts.ids import schedule_fire_id
from zhongshu.devstack.fakes.callback_receiver import FakeCallbackReceiver, Injected
from zhongshu.devstack.testing import collect, drained
from zhongshu.notifier import callbacks
from zhongshu.notifier.adapters.callback_http import (
    Failed,
    Posted,
    Refused,
    classify,
    redact,
    signed_headers,
    url_problem,
)
from zhongshu.notifier.adapters.subscriptions import type_matches
from zhongshu.notifier.adapters.task_callbacks import TaskCallbackStore
from zhongshu.notifier.callbacks import CallbackFlow, CallbackRetry
from zhongshu.notifier.main import build_service
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import CallbacksConfig, HubConfig

KEY = "test-callback-key-not-for-production"
LOCAL_RECEIVERS = HubConfig(callbacks=CallbacksConfig(allow_internal=("127.0.0.1",)))
# Retries in fractions of a second instead of hours; four deliveries in all.
FAST = CallbackRetry(max_deliver=4, backoff_s=(0.2, 0.2, 0.2))

StartCallbacks = Callable[..., Awaitable[Service]]
Receivers = Callable[[], Awaitable[FakeCallbackReceiver]]


def secret(tenant: str, subscription_id: str) -> str:
    return subscription_secret(KEY.encode(), tenant, subscription_id)


@pytest_asyncio.fixture
async def start_callbacks(bus: Bus, redis_url: str) -> AsyncIterator[StartCallbacks]:
    """Start a notifier whose callbacks retry fast; all are stopped after the test."""
    started: list[Service] = []

    async def start(
        *, retry: CallbackRetry = FAST, config: HubConfig | None = None, **settings: Any
    ) -> Service:
        # The receivers listen on 127.0.0.1: allowed here, refused by default.
        service = build_service(config=config or LOCAL_RECEIVERS, callback_retry=retry)
        values: dict[str, Any] = {
            "nats_url": bus.url,
            "redis_url": redis_url,
            "health_port": 0,
            "uvloop": False,
            "drain_timeout_s": 5,
            "connect_timeout_s": 5,
            "callback_key": KEY,
            "callback_timeout_s": 5,
        }
        values.update(settings)
        await service.start(NotifierSettings(**values))
        started.append(service)
        return service

    yield start
    for service in started:
        with contextlib.suppress(Exception):
            await service.stop()


@pytest_asyncio.fixture
async def receivers() -> AsyncIterator[Receivers]:
    """Callback receivers on free ports, stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def make() -> FakeCallbackReceiver:
            return await stack.enter_async_context(FakeCallbackReceiver())

        yield make


async def subscribe(
    bus: Bus,
    receiver: FakeCallbackReceiver,
    sub_id: str,
    *,
    tenant: str = "acme",
    path: str | None = None,
    event_types: tuple[str, ...] = ("zhongshu.task.*", "zhongshu.workflow.*"),
    enabled: bool = True,
    url: str | None = None,
) -> Subscription:
    """Store a subscription as the gateway does, and make the receiver trust its secret."""
    sub = Subscription(
        id=sub_id,
        tenant=tenant,
        url=url or receiver.url(path or sub_id),
        event_types=event_types,
        enabled=enabled,
    )
    kv = await bus.js.key_value(streams.SUBSCRIPTIONS_KV.bucket)
    await kv.put(definition_key(tenant, sub_id), msgspec.json.encode(sub))
    receiver.trust(sub_id, secret(tenant, sub_id))
    return sub


async def publish(bus: Bus, subject: str, event: Event, *, tenant: str = "acme") -> bytes:
    """Publish an event as its producer would; returns the exact bytes on the bus."""
    env = wire.make_envelope(event, id=f"evt-{uuid.uuid4().hex[:16]}", source="test", tenant=tenant)
    raw = wire.encode(env)
    await bus.js.publish(subject, raw, headers={H.MSG_ID: env.id})
    return raw


def event_id(raw: bytes) -> str:
    return wire.decode_any(raw).id


def new_task() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"


async def task_lifecycle(bus: Bus, task_id: str, *, tenant: str = "acme") -> list[bytes]:
    """A task's request and two of its events, as the gateway and the agent publish them."""
    request = TaskRequested(
        task_id=task_id, tenant=tenant, requested_by="api:test", origin="api", prompt="hi"
    )
    return [
        await publish(bus, subjects.task_requested(tenant), request, tenant=tenant),
        await publish(
            bus, subjects.task_event(tenant, task_id), TaskStarted(task_id=task_id), tenant=tenant
        ),
        await publish(
            bus,
            subjects.task_event(tenant, task_id),
            TaskCompleted(task_id=task_id, result_text="done"),
            tenant=tenant,
        ),
    ]


async def all_drained(bus: Bus) -> None:
    await drained(bus.js, streams.TASKS.name, callbacks.EVENTS_DURABLE)
    await drained(bus.js, streams.WORKFLOWS.name, callbacks.RUNS_DURABLE)
    await drained(bus.js, streams.TASKS.name, callbacks.TARGETS_DURABLE)


async def delivery_log(bus: Bus, status: str, tenant: str = "acme") -> list[Any]:
    """Every delivery-log event stored so far (read until the subject is idle)."""
    msgs = await collect(bus.js, subjects.delivery(status, "callback", tenant))
    return [wire.decode_any(m.data).data for m in msgs]


# --- on the bus ----------------------------------------------------------------------------------


async def test_a_task_subscription_receives_the_tasks_events_each_signed(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "ops", event_types=("zhongshu.task.*",))
    await start_callbacks()
    task_id = new_task()
    sent = await task_lifecycle(bus, task_id)
    run = RunStarted(run_id=task_id, tenant="acme", workflow="wf")
    await publish(bus, subjects.workflow_run("acme", task_id), run)  # not a task event

    await receiver.wait_until(lambda: len(receiver.accepted()) >= 3)
    await all_drained(bus)

    # Posted concurrently, so in any order; each is the very bytes that were on the bus.
    by_id = {event_id(raw): raw for raw in sent}
    assert sorted(r.event_id for r in receiver.received) == sorted(by_id)
    for posted in receiver.received:
        raw = by_id[posted.event_id]
        assert posted.body == raw
        assert posted.verified
        assert posted.status == 200
        assert posted.subscription_id == "ops"
        assert posted.event_id == event_id(raw)
        assert posted.content_type == H.CLOUDEVENTS_JSON
        assert receiver.verify(posted)
    delivered = await delivery_log(bus, "delivered")
    assert sorted(d.event_id for d in delivered) == sorted(event_id(raw) for raw in sent)
    assert all(isinstance(d, CallbackDelivered) for d in delivered)
    assert {(d.subscription_id, d.status_code, d.attempts) for d in delivered} == {("ops", 200, 1)}


async def test_a_tampered_or_foreign_callback_fails_the_receivers_check(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "ops")
    await start_callbacks()
    task_id = new_task()
    await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))
    await receiver.wait_until(lambda: len(receiver.accepted()) >= 1)
    posted = receiver.received[0]
    assert receiver.verify(posted)

    tampered = posted.body.replace(task_id.encode(), b"task-other")
    assert tampered != posted.body
    assert not receiver.verify(posted, body=tampered)
    ts = int(posted.timestamp)
    foreign = secret("beta", "ops")  # same subscription id, another tenant
    assert not verify_callback(foreign, ts, posted.body, posted.signature, now=time.time())
    stale = ts - 3600  # a replay an hour later, re-signed with the old timestamp, is refused
    stale_sig = sign_callback(secret("acme", "ops"), stale, posted.body)
    assert not verify_callback(secret("acme", "ops"), stale, posted.body, stale_sig, now=ts)


async def test_a_receiver_failing_twice_then_succeeding_gets_the_event_delivered_once(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "ops")
    receiver.inject(Injected(status=500), Injected(status=503))
    await start_callbacks()
    task_id = new_task()
    raw = await publish(
        bus, subjects.task_event("acme", task_id), TaskCompleted(task_id=task_id, result_text="ok")
    )

    await receiver.wait_until(lambda: len(receiver.accepted()) >= 1)
    await all_drained(bus)

    assert [r.status for r in receiver.received] == [500, 503, 200]
    assert {r.event_id for r in receiver.received} == {event_id(raw)}
    assert all(r.verified for r in receiver.received)  # each retry signed afresh
    delivered = await delivery_log(bus, "delivered")
    assert len(delivered) == 1
    assert delivered[0].event_id == event_id(raw)
    assert delivered[0].attempts == 3
    assert await delivery_log(bus, "failed") == []


async def test_a_callback_to_an_internal_address_is_refused_logged_as_failed_and_audited(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "loopback")  # the receiver listens on 127.0.0.1
    await subscribe(bus, receiver, "metadata", url="http://169.254.169.254/latest/meta-data/?t=x")
    await subscribe(bus, receiver, "private6", url="http://[fd00::7]:8080/hook")
    await start_callbacks(config=HubConfig())  # nothing internal allowed
    task_id = new_task()
    raw = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    await all_drained(bus)
    failed = await delivery_log(bus, "failed")

    assert receiver.received == []
    assert sorted((f.subscription_id, f.event_id, f.attempts) for f in failed) == [
        ("loopback", event_id(raw), 1),
        ("metadata", event_id(raw), 1),
        ("private6", event_id(raw), 1),
    ]
    reasons = {f.subscription_id: f.reason for f in failed}
    assert "127.0.0.1 is a loopback address" in reasons["loopback"]
    assert "169.254.169.254 is a link-local address" in reasons["metadata"]
    assert "fd00::7 is a private address" in reasons["private6"]
    audits = await collect(bus.js, subjects.audit("acme", "security"))
    refused = [wire.decode(m.data, AuditRecorded).data for m in audits]
    assert sorted((a.action, a.actor, a.outcome) for a in refused) == [
        ("callback.refused", "loopback", "denied"),
        ("callback.refused", "metadata", "denied"),
        ("callback.refused", "private6", "denied"),
    ]
    by_actor = {a.actor: a for a in refused}
    assert by_actor["metadata"].target == "http://169.254.169.254/latest/meta-data/"  # no query
    dead = await collect(bus.js, subjects.dlq(streams.TASKS.name, callbacks.EVENTS_DURABLE))
    assert dead == []  # refused for good: not retried, not a poison message


async def test_a_410_is_permanent_logged_as_failed_and_never_retried(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "gone")
    receiver.inject(Injected(status=410))
    await start_callbacks()
    task_id = new_task()
    raw = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    await receiver.wait_until(lambda: len(receiver.received) >= 1)
    await all_drained(bus)

    assert [r.status for r in receiver.received] == [410]
    failed = await delivery_log(bus, "failed")
    assert len(failed) == 1
    assert isinstance(failed[0], CallbackDeliveryFailed)
    assert (failed[0].event_id, failed[0].status_code, failed[0].attempts) == (
        event_id(raw),
        410,
        1,
    )
    assert "410" in failed[0].reason
    assert await delivery_log(bus, "delivered") == []
    dead = await collect(bus.js, subjects.dlq(streams.TASKS.name, callbacks.EVENTS_DURABLE))
    assert dead == []  # a refusal is the receiver's answer, not a poison message


async def test_another_tenants_subscription_never_receives_this_tenants_events(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "acme-all", tenant="acme")
    await subscribe(bus, receiver, "beta-all", tenant="beta")
    await start_callbacks()
    acme_task, beta_task = new_task(), new_task()
    acme = await publish(
        bus, subjects.task_event("acme", acme_task), TaskStarted(task_id=acme_task)
    )
    beta = await publish(
        bus, subjects.task_event("beta", beta_task), TaskStarted(task_id=beta_task), tenant="beta"
    )
    # An envelope claiming tenant beta on acme's subject goes to nobody.
    forged = await publish(
        bus, subjects.task_event("acme", acme_task), TaskCompleted(task_id=acme_task), tenant="beta"
    )

    await receiver.wait_until(lambda: len(receiver.accepted()) >= 2)
    await all_drained(bus)

    assert [r.event_id for r in receiver.at("acme-all")] == [event_id(acme)]
    assert [r.event_id for r in receiver.at("beta-all")] == [event_id(beta)]
    assert event_id(forged) not in {r.event_id for r in receiver.received}
    assert all(r.verified for r in receiver.received)


async def test_a_disabled_subscription_receives_nothing(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "off", enabled=False)
    await subscribe(bus, receiver, "on")
    await subscribe(bus, receiver, "runs-only", event_types=("zhongshu.workflow.*",))
    await start_callbacks()
    task_id = new_task()
    raw = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    await receiver.wait_until(lambda: len(receiver.accepted()) >= 1)
    await all_drained(bus)

    assert [r.event_id for r in receiver.at("on")] == [event_id(raw)]
    assert receiver.at("off") == []
    assert receiver.at("runs-only") == []


async def test_a_redelivered_event_is_not_posted_again_to_a_receiver_that_got_it(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    steady, flaky = await receivers(), await receivers()
    await subscribe(bus, steady, "steady")
    await subscribe(bus, flaky, "flaky")
    flaky.inject(Injected(status=500))  # the event comes back once, for this receiver
    await start_callbacks()
    task_id = new_task()
    raw = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    await flaky.wait_until(lambda: len(flaky.accepted()) >= 1)
    await all_drained(bus)

    assert [r.status for r in flaky.received] == [500, 200]
    assert [r.event_id for r in steady.received] == [event_id(raw)]
    delivered = await delivery_log(bus, "delivered")
    assert sorted((d.subscription_id, d.attempts) for d in delivered) == [
        ("flaky", 2),
        ("steady", 1),
    ]


async def test_a_stalled_receiver_does_not_hold_back_the_others(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    slow, fast = await receivers(), await receivers()
    await subscribe(bus, slow, "slow")
    await subscribe(bus, fast, "fast")
    slow.hold()
    await start_callbacks(callback_timeout_s=60)
    task_id = new_task()
    first = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))
    second = await publish(
        bus, subjects.task_event("acme", task_id), TaskCompleted(task_id=task_id)
    )

    # Both events reach the fast receiver while the slow one still holds its POSTs unanswered.
    await fast.wait_until(lambda: len(fast.accepted()) >= 2)
    await slow.wait_until(lambda: slow.waiting >= 1)
    assert slow.received == []
    slow.release()
    await slow.wait_until(lambda: len(slow.accepted()) >= 2)
    await all_drained(bus)
    expected = sorted([event_id(first), event_id(second)])
    assert sorted(r.event_id for r in fast.received) == expected
    assert sorted(r.event_id for r in slow.received) == expected


async def test_a_task_request_with_a_callback_target_gets_that_tasks_later_events(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    receiver.trust(TASK_CALLBACKS_ID, secret("acme", TASK_CALLBACKS_ID))
    task_id, other_task = new_task(), new_task()
    request = TaskRequested(
        task_id=task_id,
        tenant="acme",
        requested_by="api:test",
        origin="api",
        prompt="summarise",
        deliver_to=(DeliveryTarget(kind="callback", url=receiver.url("mine")),),
    )
    # Request and events all wait in the streams before the notifier starts, so they are read
    # together: the events must still find the request's callback.
    await publish(bus, subjects.task_requested("acme"), request)
    later = [
        await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id)),
        await publish(bus, subjects.workflow_run("acme", task_id), RunCompleted(run_id=task_id)),
        await publish(
            bus,
            subjects.task_event("acme", task_id),
            TaskCompleted(task_id=task_id, result_text="x"),
        ),
    ]
    await publish(bus, subjects.task_event("acme", other_task), TaskStarted(task_id=other_task))
    await start_callbacks()

    await receiver.wait_until(lambda: len(receiver.accepted()) >= 3)
    await all_drained(bus)

    assert sorted(r.event_id for r in receiver.received) == sorted(event_id(r) for r in later)
    assert all(r.verified and r.subscription_id == TASK_CALLBACKS_ID for r in receiver.received)
    assert {r.path for r in receiver.received} == {"mine"}
    delivered = await delivery_log(bus, "delivered")
    assert sorted(d.event_id for d in delivered) == sorted(event_id(r) for r in later)
    assert {d.subscription_id for d in delivered} == {TASK_CALLBACKS_ID}


async def test_events_read_before_their_tasks_request_is_remembered_wait_for_it(
    bus: Bus,
    receivers: Receivers,
    start_callbacks: StartCallbacks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = await receivers()
    receiver.trust(TASK_CALLBACKS_ID, secret("acme", TASK_CALLBACKS_ID))
    remember = TaskCallbackStore.remember
    remembering = asyncio.Event()

    async def slow_remember(self: TaskCallbackStore, *args: Any) -> None:
        # The request is being handled (a slow Redis, a busy replica) while its events arrive.
        remembering.set()
        await asyncio.sleep(1.0)
        await remember(self, *args)

    monkeypatch.setattr(TaskCallbackStore, "remember", slow_remember)
    await start_callbacks()
    task_id = new_task()
    request = TaskRequested(
        task_id=task_id,
        tenant="acme",
        requested_by="api:test",
        origin="api",
        prompt="p",
        deliver_to=(DeliveryTarget(kind="callback", url=receiver.url("mine")),),
    )
    await publish(bus, subjects.task_requested("acme"), request)
    await asyncio.wait_for(remembering.wait(), 30)
    started = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    await receiver.wait_until(lambda: len(receiver.accepted()) >= 1)
    await all_drained(bus)
    assert [r.event_id for r in receiver.received] == [event_id(started)]


async def test_when_retries_run_out_the_failure_is_logged_and_the_event_dead_lettered(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "down")
    receiver.inject(*(Injected(status=503) for _ in range(10)))
    await start_callbacks(retry=CallbackRetry(max_deliver=3, backoff_s=(0.1, 0.1)))
    task_id = new_task()
    raw = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    dead = await collect(
        bus.js, subjects.dlq(streams.TASKS.name, callbacks.EVENTS_DURABLE), count=1, within_s=30
    )
    await all_drained(bus)

    assert len(dead) == 1
    assert dead[0].data == raw
    assert [r.status for r in receiver.received] == [503, 503, 503]
    failed = await delivery_log(bus, "failed")
    assert len(failed) == 1
    assert (failed[0].event_id, failed[0].attempts, failed[0].status_code) == (
        event_id(raw),
        3,
        503,
    )
    assert "gave up" in failed[0].reason
    alerts = await collect(bus.js, subjects.alert("error", "notifier"), count=1, within_s=10)
    assert [wire.decode_any(a.data).data.labels["consumer"] for a in alerts] == [
        callbacks.EVENTS_DURABLE
    ]


async def test_events_from_before_a_subscription_existed_are_not_posted_and_changes_apply_live(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    task_id = new_task()
    before = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))
    await subscribe(bus, receiver, "first")
    service = await start_callbacks()
    after = await publish(bus, subjects.task_event("acme", task_id), TaskCompleted(task_id=task_id))
    await receiver.wait_until(lambda: len(receiver.accepted()) >= 1)
    await all_drained(bus)
    assert [r.event_id for r in receiver.received] == [event_id(after)]
    assert event_id(before) not in {r.event_id for r in receiver.received}

    # Added while running: seen without a restart. Deleted: no longer posted to.
    flow: CallbackFlow = service.deps.callbacks
    await subscribe(bus, receiver, "second")
    kv = await bus.js.key_value(streams.SUBSCRIPTIONS_KV.bucket)
    await kv.delete(definition_key("acme", "first"))
    await receiver.wait_until(
        lambda: [s.subscription.id for s in flow.directory.for_tenant("acme")] == ["second"]
    )
    later = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))
    await receiver.wait_until(lambda: len(receiver.at("second")) >= 1)
    await all_drained(bus)
    assert [r.event_id for r in receiver.at("second")] == [event_id(later)]
    assert [r.event_id for r in receiver.at("first")] == [event_id(after)]


async def test_a_subscription_url_that_is_not_http_is_refused_without_a_request(
    bus: Bus, receivers: Receivers, start_callbacks: StartCallbacks
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "local-file", url="file:///etc/passwd")
    await start_callbacks()
    task_id = new_task()
    raw = await publish(bus, subjects.task_event("acme", task_id), TaskStarted(task_id=task_id))

    failed = await collect(
        bus.js, subjects.delivery("failed", "callback", "acme"), count=1, within_s=30
    )
    await all_drained(bus)
    event = wire.decode_any(failed[0].data).data
    assert (event.event_id, event.status_code) == (event_id(raw), None)
    assert "http" in event.reason
    assert receiver.received == []


async def test_without_a_callback_key_nothing_is_posted_and_one_warning_says_why(
    bus: Bus,
    receivers: Receivers,
    start_callbacks: StartCallbacks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = await receivers()
    await subscribe(bus, receiver, "ops")
    with caplog.at_level(logging.WARNING, logger="zhongshu.notifier.callbacks"):
        await start_callbacks(callback_key=None)
    task_id = new_task()
    await task_lifecycle(bus, task_id)
    await all_drained(bus)

    assert receiver.received == []
    warnings = [r for r in caplog.records if "ZHONGSHU_CALLBACK_KEY" in r.getMessage()]
    assert len(warnings) == 1
    assert await delivery_log(bus, "delivered") == []


# --- pure rules ----------------------------------------------------------------------------------


def test_event_type_globs_match_any_suffix_and_nothing_else() -> None:
    assert type_matches("zhongshu.task.*", "zhongshu.task.task_started.v1")
    assert type_matches("zhongshu.*.v1", "zhongshu.workflow.run_completed.v1")
    assert type_matches("zhongshu.task.task_completed.v1", "zhongshu.task.task_completed.v1")
    assert not type_matches("zhongshu.task.*", "zhongshu.workflow.run_started.v1")
    assert not type_matches("zhongshu.task.task_completed.v1", "zhongshu.task.task_completed.v10")
    assert not type_matches("zhongshu.task?*", "zhongshu.taskx.a")  # no other wildcards


def test_receiver_answers_are_classified_for_retry() -> None:
    assert classify(204) == Posted(204)
    for permanent in (400, 401, 403, 404, 410, 422):
        assert isinstance(classify(permanent), Refused)
    for transient in (408, 429, 500, 502, 503, 301, 307):
        assert isinstance(classify(transient), Failed)


def test_only_http_urls_are_called_and_logs_never_show_their_secrets() -> None:
    assert url_problem("https://example.com/hook") is None
    assert url_problem("http://127.0.0.1:8080/x") is None
    for bad in ("file:///etc/passwd", "unix:/run/docker.sock", "ftp://h/x", "https:///no-host"):
        assert url_problem(bad) is not None
    assert redact("https://user:pw@example.com:8443/hook?token=abc") == (
        "https://example.com:8443/hook"
    )


def test_signed_headers_verify_with_the_derived_secret_only() -> None:
    body = b'{"id":"e1"}'
    key = secret("acme", "ops")
    hdrs = signed_headers(key, body, event_id="e1", subscription_id="ops", now=1_700_000_000)
    assert hdrs[H.CONTENT_TYPE] == H.CLOUDEVENTS_JSON
    assert hdrs["X-Zhongshu-Event-Id"] == "e1"
    ts, sig = int(hdrs["X-Zhongshu-Timestamp"]), hdrs["X-Zhongshu-Signature"]
    assert verify_callback(key, ts, body, sig, now=1_700_000_010)
    assert not verify_callback(secret("acme", "other"), ts, body, sig, now=1_700_000_010)
    assert not verify_callback(key, ts, body + b" ", sig, now=1_700_000_010)


def test_each_schedule_firing_is_posted_as_its_own_event_and_task() -> None:
    request = TaskRequested(
        task_id="nightly", tenant="acme", requested_by="schedule:n", origin="schedule", prompt="p"
    )
    env = wire.make_envelope(request, id="sched-body", source="gateway", tenant="acme")
    raw = wire.encode(env)
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    first_id, first = callbacks.firing_event(raw, "2030-01-03T03:04:05Z", at)
    second_id, _ = callbacks.firing_event(raw, "2030-01-04T03:04:05Z", at)
    assert first_id != second_id
    posted = wire.decode(first, TaskRequested)
    assert posted.id == first_id == schedule_fire_id("sched-body", "2030-01-03T03:04:05Z")
    assert posted.data.task_id == schedule_fire_id("nightly", "2030-01-03T03:04:05Z")
    assert posted.time == at


def test_an_envelope_is_trusted_only_with_its_own_subjects_tenant() -> None:
    assert callbacks.subject_tenant_matches(subjects.task_event("acme", "t1"), "acme")
    assert callbacks.subject_tenant_matches(subjects.task_requested("acme"), "acme")
    assert callbacks.subject_tenant_matches(subjects.workflow_run("acme", "r1"), "acme")
    assert not callbacks.subject_tenant_matches(subjects.task_event("acme", "t1"), "beta")
    assert not callbacks.subject_tenant_matches(subjects.task_event("a_b", "t1"), "a.c")
