"""The run log on a real JetStream: a step is requested once however many handlers ask (beyond
the duplicate window too), and a run is rebuilt from its own subject."""

from __future__ import annotations

import uuid

from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import RunStarted, StepCompleted, StepRequested, StepStarted
from zhongshu.devstack.testing import collect
from zhongshu.runtime.bus import Publisher
from zhongshu.taskengine.adapters.runlog import RunLog


def request(run_id: str, envelope_id: str) -> wire.Envelope[StepRequested]:
    step = StepRequested(
        run_id=run_id, tenant="acme", workflow="wf", step="join", kind="infer", config={}
    )
    return wire.make_envelope(step, id=envelope_id, source="test", tenant="acme")


async def test_a_step_is_requested_once_and_a_retry_only_after_the_request_it_replaces(
    js: JetStreamContext, provisioned_nats_url: str
) -> None:
    del provisioned_nats_url  # the streams must exist
    run_id = "run-" + uuid.uuid4().hex[:8]
    log = RunLog(js, Publisher(js))
    # Distinct envelope ids: what the duplicate window would not catch.
    assert await log.request_step(request(run_id, "first"), after_sequence=0)
    assert not await log.request_step(request(run_id, "again"), after_sequence=0)
    latest = await log.last_step_request("acme", run_id, "join")
    assert latest is not None
    first_seq = latest[0]
    assert await log.request_step(request(run_id, "retry-1"), after_sequence=first_seq)
    assert not await log.request_step(request(run_id, "retry-1b"), after_sequence=first_seq)
    stored = await collect(js, subjects.workflow_step("acme", run_id, "join"), within_s=2)
    assert [wire.decode_any(m.data).id for m in stored] == ["first", "retry-1"]


async def test_a_run_is_rebuilt_from_its_subject_skipping_foreign_bytes(
    js: JetStreamContext, provisioned_nats_url: str
) -> None:
    del provisioned_nats_url
    run_id = "run-" + uuid.uuid4().hex[:8]
    subject = subjects.workflow_run("acme", run_id)
    events = (
        RunStarted(run_id=run_id, tenant="acme", workflow="wf", steps=("a",)),
        StepStarted(run_id=run_id, step="a"),
        StepCompleted(run_id=run_id, step="a", output={"text": "hi"}),
    )
    for index, event in enumerate(events):
        env = wire.make_envelope(event, id=f"{run_id}-{index}", source="test", tenant="acme")
        await js.publish(subject, wire.encode(env), headers={H.MSG_ID: env.id})
        if index == 0:
            await js.publish(subject, b"not an event", headers={H.MSG_ID: run_id + "-junk"})
    state = await RunLog(js, Publisher(js)).read("acme", run_id)
    assert state.started is not None
    assert state.outputs() == {"a": {"text": "hi"}}
    assert state.step("a").attempts == 1
    empty = await RunLog(js, Publisher(js)).read("acme", "run-none-" + run_id)
    assert empty.started is None
