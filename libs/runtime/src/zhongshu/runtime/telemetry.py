"""Traces (W3C ``traceparent`` across the bus, OTLP when configured) and ECS JSON logs."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping

import ecs_logging
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_configured_for: str | None = None


def setup_tracing(service_name: str) -> None:
    """Install a tracer provider for this process. Spans are exported over OTLP/HTTP only when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; without it trace ids still flow through headers and
    logs, so one trace can be followed from webhook to send."""
    global _configured_for
    if _configured_for is not None:
        return
    resource = Resource.create({"service.name": service_name})
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # Imported only when exporting: the protobuf exporter is slow to import.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        # Nothing would export a recorded span, and recording costs ~40 us per message: spans
        # stay non-recording but still get their own ids in the caller's trace, so trace ids
        # flow through headers and logs. (The traceparent's sampled flag is then 00.)
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)
    _configured_for = service_name


def shutdown_tracing() -> None:
    """Flush spans still queued for export (called when a service stops)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


# A proxy that binds to the provider once `setup_tracing` installs it; building a tracer per
# message was the largest single cost in the consume loop's profile.
_TRACER = trace.get_tracer("zhongshu.runtime")


def tracer() -> trace.Tracer:
    return _TRACER


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current span's ``traceparent`` (and ``tracestate``) into outgoing headers."""
    _PROPAGATOR.inject(headers)


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a message carried, so its handler's span continues the same trace."""
    return _PROPAGATOR.extract(headers or {})


class _TraceIdFilter(logging.Filter):
    """Adds ``trace.id``/``span.id`` of the current span to every record, for ECS/Kibana."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            setattr(record, "trace.id", format(span_context.trace_id, "032x"))
            setattr(record, "span.id", format(span_context.span_id, "016x"))
        return True


def setup_logging(service_name: str, level: str = "INFO") -> None:
    """ECS JSON lines on stderr, one per record, carrying the service name and trace ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        # uvicorn adds an ANSI-coloured copy of its message; the plain one is enough.
        ecs_logging.StdlibFormatter(
            extra={"service.name": service_name}, exclude_fields=("color_message",)
        )
    )
    handler.addFilter(_TraceIdFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # nats-py logs every reconnect attempt at ERROR; ours are more useful.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO, and some platform URLs carry credentials
    # (DingTalk's access_token, robot webhooks): never below WARNING.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
