"""Workflow runs on a real JetStream: a DAG with a parallel branch and a join completes with
every step once; failures are retried, then fail the run; unusable definitions are refused
with their reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest_asyncio

from services.taskengine.tests.taskengine_testing import CALLBACK_KEY, DataServer, Hub, of_type
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.definitions import (
    TASK_CALLBACKS_ID,
    StepDefinition,
    WorkflowDefinition,
    subscription_secret,
)
from zhongshu.contracts.events import (
    AuditRecorded,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskCompleted,
    TaskFailed,
    TaskRequested,
    TaskStarted,
)
from zhongshu.contracts.notifications import NOTIFICATION_TYPE
from zhongshu.devstack.fakes.callback_receiver import FakeCallbackReceiver
from zhongshu.devstack.testing import collect as collect_messages
from zhongshu.taskengine import naming
from zhongshu.taskengine.dsl import callback, chat, collect, infer, notify, workflow


@pytest_asyncio.fixture
async def server() -> AsyncIterator[DataServer]:
    async with DataServer() as data:
        yield data


@pytest_asyncio.fixture
async def receiver(hub: Hub) -> AsyncIterator[FakeCallbackReceiver]:
    async with FakeCallbackReceiver() as fake:
        fake.trust(
            TASK_CALLBACKS_ID,
            subscription_secret(CALLBACK_KEY.encode(), hub.tenant, TASK_CALLBACKS_ID),
        )
        yield fake


def report_workflow(
    hub: Hub, server: DataServer, receiver: FakeCallbackReceiver
) -> WorkflowDefinition:
    return workflow(
        "weather-report",
        tenant=hub.tenant,
        flow=collect("fetch", url=server.url("data"))
        >> [
            infer("summary", prompt="Summarize for {{run.team}}: {{steps.fetch.json}}"),
            infer("risks", prompt="Risks at {{steps.fetch.json.temperature}} C?"),
        ]
        >> notify(
            "tell",
            targets=[chat(hub.app, "oc_ops"), callback(receiver.url("runs"))],
            text="{{steps.summary.text}} | {{steps.risks.text}}",
        ),
    )


async def test_a_three_step_workflow_with_a_parallel_branch_completes_once(
    hub: Hub, server: DataServer, receiver: FakeCallbackReceiver
) -> None:
    agent = await hub.start_agent()
    await hub.start_engine()
    await hub.put_workflow(report_workflow(hub, server, receiver))
    run_id = await hub.request_run("weather-report", {"team": "ops"})

    end = await hub.run_end(run_id)
    await hub.settle()
    assert isinstance(end, RunCompleted), end

    events = await hub.run_events(run_id)
    assert len(of_type(events, RunStarted)) == 1
    assert len(of_type(events, RunCompleted)) == 1
    assert of_type(events, StepFailed) == []
    completed = {e.step: e for e in of_type(events, StepCompleted)}
    assert sorted(completed) == ["fetch", "risks", "summary", "tell"]
    assert len(of_type(events, StepCompleted)) == 4
    assert completed["fetch"].output == {
        "status": 200,
        "json": {"city": "Hangzhou", "temperature": 31},
    }
    # The join ran after both branches, with their answers.
    order = [e.step for e in of_type(events, StepCompleted)]
    assert order.index("tell") > max(order.index("summary"), order.index("risks"))
    assert completed["summary"].output["text"] == (
        'Answer: Summarize for ops: {"city":"Hangzhou","temperature":31}'
    )
    assert completed["risks"].output["text"] == "Answer: Risks at 31 C?"

    # The agent was asked once per infer step, under ids derived from the run.
    assert sorted(t.task_id for t in agent.requests) == sorted(
        naming.child_task(run_id, step) for step in ("summary", "risks")
    )

    text = 'Answer: Summarize for ops: {"city":"Hangzhou","temperature":31} | ' + (
        "Answer: Risks at 31 C?"
    )
    replies = await hub.replies()
    assert [(r.app, r.chat_id, r.text) for r in replies] == [(hub.app, "oc_ops", text)]
    assert replies[0].reply_id == naming.reply(run_id, "tell", hub.app, "oc_ops")

    posted = receiver.accepted("runs")
    assert len(posted) == 1
    assert posted[0].verified
    body = json.loads(posted[0].body)
    assert body["type"] == NOTIFICATION_TYPE
    assert (body["data"]["run_id"], body["data"]["step"], body["data"]["text"]) == (
        run_id,
        "tell",
        text,
    )

    task_events = await hub.task_events(run_id)
    assert [type(e) for e in task_events] == [TaskStarted, TaskCompleted]
    assert task_events[1].result_text == text
    assert set(task_events[1].result_data) == {"fetch", "summary", "risks", "tell"}


async def test_a_failed_step_is_retried_and_the_run_completes(hub: Hub, server: DataServer) -> None:
    server.flaky_failures = 2
    await hub.start_engine()
    await hub.put_workflow(
        workflow(
            "flaky",
            tenant=hub.tenant,
            flow=collect("fetch", url=server.url("flaky"), retries=2)
            >> notify("tell", targets=[chat(hub.app, "oc_ops")], text="ok: {{steps.fetch.json}}"),
        )
    )
    run_id = await hub.request_run("flaky")
    end = await hub.run_end(run_id)
    await hub.settle()
    assert isinstance(end, RunCompleted), end
    events = await hub.run_events(run_id)
    failures = of_type(events, StepFailed)
    assert [(f.step, f.attempt, f.final) for f in failures] == [
        ("fetch", 1, False),
        ("fetch", 2, False),
    ]
    assert "HTTP 500" in failures[0].reason
    assert [(e.step, e.attempt) for e in of_type(events, StepCompleted)] == [
        ("fetch", 3),
        ("tell", 1),
    ]
    assert server.hits["flaky"] == 3
    assert [r.text for r in await hub.replies()] == ['ok: {"ok":true}']


async def test_a_step_that_keeps_failing_fails_the_run_and_its_task(
    hub: Hub, server: DataServer
) -> None:
    await hub.start_engine()
    await hub.put_workflow(
        workflow(
            "doomed",
            tenant=hub.tenant,
            flow=collect("fetch", url=server.url("broken"), retries=1)
            >> notify("tell", targets=[chat(hub.app, "oc_ops")]),
        )
    )
    run_id = await hub.request_run("doomed")
    end = await hub.run_end(run_id)
    await hub.settle()
    assert isinstance(end, RunFailed)
    assert end.step == "fetch"
    assert "HTTP 503" in end.reason
    events = await hub.run_events(run_id)
    assert [(f.attempt, f.final) for f in of_type(events, StepFailed)] == [(1, False), (2, True)]
    assert of_type(events, StepCompleted) == []
    assert len(of_type(events, RunFailed)) == 1
    assert "tell" not in {e.step for e in of_type(events, StepStarted)}
    assert await hub.replies() == []
    task_events = await hub.task_events(run_id)
    assert [type(e) for e in task_events] == [TaskStarted, TaskFailed]
    assert "HTTP 503" in task_events[1].reason


async def test_a_step_that_outlives_its_timeout_fails(hub: Hub, server: DataServer) -> None:
    await hub.start_engine()
    await hub.put_workflow(
        WorkflowDefinition(
            id="slow",
            tenant=hub.tenant,
            steps=(
                StepDefinition(
                    id="fetch", kind="collect", config={"url": server.url("stall")}, timeout_s=0.5
                ),
            ),
        )
    )
    run_id = await hub.request_run("slow")
    end = await hub.run_end(run_id)
    assert isinstance(end, RunFailed)
    assert "timed out after 0.5s" in end.reason


async def test_an_infer_step_whose_agent_task_fails_is_retried_with_a_new_task(
    hub: Hub,
) -> None:
    failed: list[str] = []

    def answer(task: TaskRequested) -> str | Exception:
        if not failed:  # the first task fails, the rest succeed
            failed.append(task.task_id)
            return RuntimeError("model unavailable")
        return f"Answer: {task.prompt}"

    agent = await hub.start_agent(answer)
    await hub.start_engine()
    await hub.put_workflow(
        workflow(
            "ask",
            tenant=hub.tenant,
            flow=infer("think", prompt="What is {{run.q}}?", retries=1)
            >> notify("tell", targets=[chat(hub.app, "oc_ops")]),
        )
    )
    run_id = await hub.request_run("ask", {"q": "2+2"})
    end = await hub.run_end(run_id)
    await hub.settle()
    assert isinstance(end, RunCompleted), end
    assert [t.task_id for t in agent.requests] == [
        naming.child_task(run_id, "think", 0),
        naming.child_task(run_id, "think", 1),
    ]
    events = await hub.run_events(run_id)
    assert [f.reason for f in of_type(events, StepFailed)] == [
        "the agent's task failed: model unavailable"
    ]
    # notify with no text of its own says what the steps it needs said
    assert [r.text for r in await hub.replies()] == ["Answer: What is 2+2?"]


async def test_a_workflow_with_a_cycle_is_refused_with_the_cycle_named(hub: Hub) -> None:
    await hub.start_engine()
    await hub.put_workflow(
        WorkflowDefinition(
            id="loop",
            tenant=hub.tenant,
            steps=(
                StepDefinition(id="a", kind="infer", needs=("c",), config={"prompt": "a"}),
                StepDefinition(id="b", kind="infer", needs=("a",), config={"prompt": "b"}),
                StepDefinition(id="c", kind="infer", needs=("b",), config={"prompt": "c"}),
            ),
        )
    )
    run_id = await hub.request_run("loop")
    end = await hub.run_end(run_id)
    assert isinstance(end, RunFailed)
    assert "steps form a cycle: a needs c, c needs b, b needs a" in end.reason
    task_events = await hub.task_events(run_id)
    assert [(type(e), getattr(e, "error_code", "")) for e in task_events] == [
        (TaskFailed, "workflow_invalid")
    ]


async def test_a_workflow_with_an_unknown_need_or_no_definition_is_refused(hub: Hub) -> None:
    await hub.start_engine()
    await hub.put_workflow(
        WorkflowDefinition(
            id="dangling",
            tenant=hub.tenant,
            steps=(StepDefinition(id="a", kind="infer", needs=("ghost",), config={"prompt": "a"}),),
        )
    )
    dangling = await hub.request_run("dangling")
    missing = await hub.request_run("nowhere")
    dangling_end = await hub.run_end(dangling)
    missing_end = await hub.run_end(missing)
    assert isinstance(dangling_end, RunFailed)
    assert "step 'a' needs unknown step 'ghost'" in dangling_end.reason
    assert isinstance(missing_end, RunFailed)
    assert "does not exist" in missing_end.reason
    [failed] = await hub.task_events(missing)
    assert isinstance(failed, TaskFailed)
    assert failed.error_code == "workflow_not_found"


async def test_a_run_keeps_the_definition_it_started_with(hub: Hub, server: DataServer) -> None:
    """An edit while a run waits does not change the run's remaining steps."""
    await hub.start_engine()
    original = workflow(
        "edited",
        tenant=hub.tenant,
        flow=collect("fetch", url=server.url("held"))
        >> notify("tell", targets=[chat(hub.app, "oc_ops")], text="first version"),
    )
    await hub.put_workflow(original)
    run_id = await hub.request_run("edited")
    await server.wait_for_hit("held")
    await hub.put_workflow(
        workflow(
            "edited",
            tenant=hub.tenant,
            flow=collect("fetch", url=server.url("data"))
            >> notify("tell", targets=[chat(hub.app, "oc_ops")], text="second version"),
        )
    )
    server.release()
    end = await hub.run_end(run_id)
    assert isinstance(end, RunCompleted)
    assert [r.text for r in await hub.replies()] == ["first version"]


async def test_a_notify_callback_to_an_internal_address_is_refused_and_fails_the_step(
    hub: Hub, receiver: FakeCallbackReceiver
) -> None:
    hub.allow_internal = ()  # the receiver on 127.0.0.1 is not allowed now
    await hub.start_engine()
    await hub.put_workflow(
        workflow(
            "probe",
            tenant=hub.tenant,
            flow=notify("tell", targets=[callback(receiver.url("runs"))], retries=0),
        )
    )
    run_id = await hub.request_run("probe")
    end = await hub.run_end(run_id)
    await hub.settle()
    assert isinstance(end, RunFailed), end
    assert "callback refused: 127.0.0.1 is a loopback address" in end.reason
    assert receiver.received == []
    audits = await collect_messages(hub.js, subjects.audit(hub.tenant, "security"), count=1)
    [refused] = [wire.decode(m.data, AuditRecorded).data for m in audits]
    assert (refused.action, refused.actor, refused.target, refused.outcome) == (
        "callback.refused",
        "workflow:probe",
        "127.0.0.1",
        "denied",
    )
