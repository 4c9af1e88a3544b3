"""Logs are ECS JSON carrying the current trace; trace context crosses the bus in headers."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry import trace

from zhongshu.runtime import telemetry


def test_log_lines_are_ecs_json_with_the_current_trace_id() -> None:
    telemetry.setup_tracing("test-service")
    telemetry.setup_logging("test-service", "INFO")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    with telemetry.tracer().start_as_current_span("work") as span:
        logging.getLogger("zhongshu.test").info("handled %s", "it")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "handled it"
    assert line["log.level"] == "info"
    assert line["service"]["name"] == "test-service"
    assert line["trace"]["id"] == format(span.get_span_context().trace_id, "032x")
    assert line["ecs.version"]


def test_injected_headers_continue_the_trace_on_the_other_side() -> None:
    telemetry.setup_tracing("test-service")
    headers: dict[str, str] = {}
    with telemetry.tracer().start_as_current_span("publish") as span:
        telemetry.inject(headers)
    assert headers["traceparent"].split("-")[1] == format(span.get_span_context().trace_id, "032x")
    context = telemetry.extract(headers)
    remote = trace.get_current_span(context).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
