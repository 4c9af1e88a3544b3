"""``zhongshu trace``: a conversation's spans as a tree, found by its trace id or by any id it
names (task, event, platform message), from a real TRACES stream filled by the services'
exporter; a clear error when nothing is found or the bus is unreachable."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from dataclasses import dataclass

import nats
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from typer.testing import CliRunner

from zhongshu.cli import trace_cmd
from zhongshu.cli.main import app
from zhongshu.contracts import traces as T
from zhongshu.runtime import telemetry

runner = CliRunner()


def span(
    name: str,
    span_id: str,
    parent: str | None,
    start_ms: float,
    end_ms: float,
    *,
    service: str = "router",
    status: T.SpanStatus = "unset",
    **attributes: str,
) -> T.SpanRecord:
    return T.SpanRecord(
        trace_id="a" * 32,
        span_id=span_id,
        parent_id=parent,
        name=name,
        service=service,
        start_ns=int(start_ms * 1e6),
        end_ns=int(end_ms * 1e6),
        status=status,
        attributes={T.TENANT: "acme", **attributes},
    )


def test_spans_are_shown_under_their_parents_in_start_order() -> None:
    spans = [
        span("process notifier-replies", "4", "1", 20, 30, service="notifier"),
        span("POST /webhooks/feishu/{app}/events", "1", None, 0, 40, service="ingress-feishu"),
        span("process router", "2", "1", 5, 15),
        span("POST /open-apis/im/v1/messages/{id}/reply", "5", "4", 22, 29, service="notifier"),
        span("orphan", "9", "missing", 1, 2, status="error"),
    ]
    lines = trace_cmd.render(trace_cmd.Trace("a" * 32, spans, "trace id"))
    assert lines[0].startswith(f"trace {'a' * 32}: 5 spans, 40.0 ms, tenant acme")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "ingress-feishu",
        "  └─ router",
        "  └─ notifier",
        "    └─ notifier",
        "router",  # its parent was not recorded: shown at the top
    ]
    assert "+22.0 ms  7.0 ms  ok" in lines[4]
    assert lines[5].endswith("ERROR")


@dataclass(frozen=True)
class Recorded:
    trace_id: str
    task_id: str
    event_id: str
    platform_message_id: str


def record_conversation(url: str) -> Recorded:
    """Spans as three services would record them, published by the real exporter."""
    task_id, event_id = "task-" + uuid.uuid4().hex, "evt-" + uuid.uuid4().hex
    platform_message_id = "om_" + uuid.uuid4().hex

    async def go() -> str:
        nc = await nats.connect(url)
        exporter = telemetry.BusSpanExporter()
        provider = TracerProvider(
            resource=Resource.create({"service.name": "cli-test"}),
            sampler=telemetry._Sampling(1.0),
        )
        provider.add_span_processor(exporter)
        tracer = provider.get_tracer("test")
        exporter.attach(nc)
        with tracer.start_as_current_span(
            "POST /webhooks/feishu/{app}/events",
            kind=SpanKind.SERVER,
            attributes={T.SERVICE: "ingress-feishu", T.TENANT: "acme", T.MESSAGE_ID: event_id},
        ) as root:
            with (
                tracer.start_as_current_span(
                    "process agent-commands",
                    kind=SpanKind.CONSUMER,
                    attributes={T.SERVICE: "agent", T.TASK_ID: task_id},
                ),
                tracer.start_as_current_span(
                    "chat fake-model",
                    kind=SpanKind.CLIENT,
                    attributes={"gen_ai.request.model": "fake-model"},
                ) as llm,
            ):
                llm.set_status(StatusCode.ERROR, "http_500")
            with tracer.start_as_current_span(
                "POST /open-apis/im/v1/messages/{id}/reply",
                kind=SpanKind.CLIENT,
                attributes={T.SERVICE: "notifier", T.PLATFORM_MESSAGE_ID: platform_message_id},
            ):
                pass
        await exporter.flush()
        await nc.close()
        return format(root.get_span_context().trace_id, "032x")

    return Recorded(asyncio.run(go()), task_id, event_id, platform_message_id)


def invoke(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"ZHONGSHU_NATS_URL": url, "COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def recorded(provisioned_nats_url: str) -> Recorded:
    return record_conversation(provisioned_nats_url)


@pytest.mark.parametrize("kind", ["trace_id", "task_id", "event_id", "platform_message_id"])
def test_a_trace_is_found_by_each_id_it_names(
    provisioned_nats_url: str, recorded: Recorded, kind: str
) -> None:
    code, out = invoke(provisioned_nats_url, "trace", getattr(recorded, kind))
    assert code == 0, out
    assert out.startswith(f"trace {recorded.trace_id}: 4 spans")
    assert "services ingress-feishu, agent, notifier" in out
    assert "agent: process agent-commands" in out
    assert "agent: chat fake-model" in out  # the service is inherited from the parent
    assert "ERROR (http_500)" in out
    assert f"zhongshu.task_id={recorded.task_id}" in out


def test_json_output_lists_every_span_with_its_depth(
    provisioned_nats_url: str, recorded: Recorded
) -> None:
    code, out = invoke(provisioned_nats_url, "trace", recorded.task_id, "--json")
    assert code == 0, out
    found = json.loads(out)
    assert found["trace_id"] == recorded.trace_id
    assert [(s["depth"], s["service"], s["kind"]) for s in found["spans"]] == [
        (0, "ingress-feishu", "server"),
        (1, "agent", "consumer"),
        (2, "agent", "client"),
        (1, "notifier", "client"),
    ]
    assert all(s["attributes"][T.TENANT] == "acme" for s in found["spans"])


def test_an_id_nothing_recorded_is_a_clear_error(provisioned_nats_url: str) -> None:
    code, out = invoke(provisioned_nats_url, "trace", "task-never-ran")
    assert code == 1
    assert "no trace found for 'task-never-ran'" in out
    code, out = invoke(provisioned_nats_url, "trace", "0" * 31 + "1")
    assert code == 1
    assert "no trace found" in out


def test_an_unreachable_bus_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out = invoke(f"nats://127.0.0.1:{port}", "trace", "task-1")
    assert code == 1
    assert "cannot reach NATS" in out
