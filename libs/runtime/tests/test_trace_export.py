"""Sampled spans reach the TRACES stream in batches, findable by the ids they name; an overloaded
or unreachable exporter drops spans (counted) instead of holding the service up; a conversation
sampled out records nothing; the webhook's span keeps the query string out."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts import traces as T
from zhongshu.contracts.streams import TRACES
from zhongshu.devstack.testing import eventually
from zhongshu.runtime import telemetry
from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.webhooks import Webhook, WebhookFront, WebhookRequest, WebhookResponse


def recording(exporter: telemetry.BusSpanExporter, ratio: float = 1.0) -> trace.Tracer:
    """A tracer of its own provider (the process's global one is shared by every test)."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "exporter-test"}),
        sampler=telemetry._Sampling(ratio),
    )
    provider.add_span_processor(exporter)
    return provider.get_tracer("test")


def dropped(reason: str) -> float:
    return telemetry.SPANS_DROPPED.labels(reason)._value.get()


async def stored_spans(nc: Client, trace_id: str) -> list[tuple[T.SpanRecord, str]]:
    js = nc.jetstream()
    found, seq = [], 1
    while True:
        try:
            raw = await js.get_msg(
                TRACES.name, seq, subject=subjects.trace_span(trace_id), next=True
            )
        except NotFoundError:
            return found
        found.append((msgspec.json.decode(raw.data or b"", type=T.SpanRecord), raw.headers or {}))
        seq = int(raw.seq or 0) + 1


@pytest.fixture
async def bus(provisioned_nats_url: str) -> Client:
    client = await nats.connect(provisioned_nats_url)
    yield client
    await client.close()


async def test_finished_spans_are_published_in_batches_once_the_loop_runs(bus: Client) -> None:
    exporter = telemetry.BusSpanExporter(batch=3, interval_s=0.01)
    tracer = recording(exporter)
    exporter.attach(bus)
    task_id = "task-" + uuid.uuid4().hex
    with tracer.start_as_current_span("root", attributes={T.TASK_ID: task_id}) as root:
        for n in range(6):
            with tracer.start_as_current_span(f"step {n}"):
                pass
    # Ending a span only queues it: nothing is published from inside the caller's code.
    assert exporter.queued == 7
    trace_id = format(root.get_span_context().trace_id, "032x")

    stored = await eventually(
        lambda: _all_stored(bus, trace_id, 7), "the seven spans in TRACES", within_s=10
    )
    assert exporter.queued == 0
    names = sorted(record.name for record, _ in stored)
    assert names == ["root", *(f"step {n}" for n in range(6))]
    for record, headers in stored:
        assert headers[H.MSG_ID] == T.span_msg_id(record.trace_id, record.span_id)
        assert record.service == "exporter-test"
        # Inherited from the parent: the task finds every span of the trace.
        assert record.attributes[T.TASK_ID] == task_id
    js = bus.jetstream()
    index = await js.get_last_msg(TRACES.name, subjects.trace_index(task_id))
    assert msgspec.json.decode(index.data or b"", type=T.TraceIndexEntry).trace_id == trace_id


def test_spans_leave_the_queue_in_batches() -> None:
    exporter = telemetry.BusSpanExporter(batch=3)
    tracer = recording(exporter)
    for n in range(7):
        with tracer.start_as_current_span(f"span {n}"):
            pass
    assert [len(exporter._take()) for _ in range(3)] == [3, 3, 1]


async def _all_stored(nc: Client, trace_id: str, count: int) -> list[tuple[T.SpanRecord, str]]:
    found = await stored_spans(nc, trace_id)
    return found if len(found) >= count else []


async def test_a_span_exported_twice_is_stored_once(bus: Client) -> None:
    exporter = telemetry.BusSpanExporter()
    tracer = recording(exporter)
    with tracer.start_as_current_span("once") as span:
        pass
    [finished] = list(exporter._queue)
    exporter.on_end(finished)  # a retried export of the same span
    exporter.attach(bus)
    await exporter.flush()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert [r.name for r, _ in await stored_spans(bus, trace_id)] == ["once"]


def test_spans_beyond_the_queue_are_dropped_and_counted() -> None:
    exporter = telemetry.BusSpanExporter(max_queue=5)
    tracer = recording(exporter)  # no bus attached: nothing drains the queue
    before = dropped("overload")
    for n in range(8):
        with tracer.start_as_current_span(f"span {n}"):
            pass
    assert exporter.queued == 5
    assert dropped("overload") - before == 3


async def test_spans_for_an_unreachable_bus_are_dropped_without_raising(
    provisioned_nats_url: str,
) -> None:
    client = await nats.connect(provisioned_nats_url)
    exporter = telemetry.BusSpanExporter()
    tracer = recording(exporter)
    exporter.attach(client)
    await client.close()
    before = dropped("unreachable")
    with tracer.start_as_current_span("lost"):
        pass
    await exporter._publish(exporter._take())  # what the scheduled run does
    assert exporter.queued == 0
    assert dropped("unreachable") - before == 1


def test_nothing_is_recorded_when_sampled_out() -> None:
    exporter = telemetry.BusSpanExporter()
    tracer = recording(exporter, ratio=0.0)
    with tracer.start_as_current_span("webhook", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("publish"):
            pass
        headers: dict[str, str] = {}
        telemetry.inject(headers)
    assert not root.is_recording()
    assert exporter.queued == 0
    # The next service follows the decision carried in the traceparent (sampled bit clear).
    assert int(headers["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0
    with tracer.start_as_current_span("process", context=telemetry.extract(headers)) as child:
        assert not child.is_recording()
    assert exporter.queued == 0


def test_a_sampled_conversation_is_recorded_whole_whatever_the_ratio_downstream() -> None:
    upstream = telemetry.BusSpanExporter()
    with recording(upstream, ratio=1.0).start_as_current_span("webhook"):
        headers: dict[str, str] = {}
        telemetry.inject(headers)
    downstream = telemetry.BusSpanExporter()
    tracer = recording(downstream, ratio=0.0)
    with tracer.start_as_current_span("process", context=telemetry.extract(headers)) as span:
        assert span.is_recording()
    assert downstream.queued == 1


@pytest.mark.parametrize("value", ["2", "-0.1", "half", "nan"])
def test_a_sample_ratio_outside_0_to_1_stops_the_start(value: str) -> None:
    with pytest.raises(ConfigurationError, match="ZHONGSHU_TRACE_SAMPLE"):
        telemetry.sample_ratio_from_env({telemetry.SAMPLE_ENV: value})
    assert telemetry.sample_ratio_from_env({}) == telemetry.DEFAULT_SAMPLE
    assert telemetry.sample_ratio_from_env({telemetry.SAMPLE_ENV: "0.25"}) == 0.25


async def test_the_webhook_span_is_a_server_span_without_the_query(
    recorded_spans: InMemorySpanExporter,
) -> None:
    async def handler(request: WebhookRequest) -> WebhookResponse:
        return WebhookResponse.json({"ok": True})

    async def fallback(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not a webhook")

    front = WebhookFront([Webhook("/webhooks/test/{app}/events", handler)], fallback)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/test/app-1/events",
        "query_string": b"access_token=very-secret-token",
        "headers": [],
        "client": ("10.0.0.7", 5555),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    await front(scope, receive, send)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    [span] = [s for s in recorded_spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    attributes = dict(span.attributes or {})
    assert span.name == "POST /webhooks/test/{app}/events"
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/webhooks/test/{app}/events"
    assert attributes["url.path"] == "/webhooks/test/app-1/events"
    assert attributes["http.response.status_code"] == 200
    assert not any("very-secret-token" in str(v) for v in attributes.values())
