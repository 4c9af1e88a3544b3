"""Traces (W3C ``traceparent`` across the bus; spans kept in the TRACES stream for ``zhongshu
trace``, and over OTLP when a collector is configured) and ECS JSON logs."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import ecs_logging
import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from prometheus_client import Counter

from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts import traces as T
from zhongshu.runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = logging.getLogger("zhongshu.runtime.telemetry")

SAMPLE_ENV = "ZHONGSHU_TRACE_SAMPLE"
BUS_ENV = "ZHONGSHU_TRACE_BUS"
DEFAULT_SAMPLE = 1.0
"""Share of new traces recorded (parent-based: a conversation is recorded whole or not at all).
Measured with bench/e2e.py --quick (docs/operations/tracing.md)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_configured_for: str | None = None

SPANS_EXPORTED = Counter(
    "zhongshu_trace_spans_exported_total", "Finished spans published to the TRACES stream"
)
SPANS_DROPPED = Counter(
    "zhongshu_trace_spans_dropped_total",
    "Finished spans not exported: the queue was full (overload) or the bus was unreachable",
    ("reason",),
)


class _Sampling(Sampler):
    """Parent-based sampling whose ratio can change while the process runs (tests, and several
    in-process services sharing one provider): a child follows its parent's decision, a new
    trace is recorded with probability ``ratio``."""

    def __init__(self, ratio: float) -> None:
        self.set_ratio(ratio)

    def set_ratio(self, ratio: float) -> None:
        self.ratio = ratio
        root = ALWAYS_OFF if ratio <= 0 else TraceIdRatioBased(min(ratio, 1.0))
        self._delegate = ParentBased(root)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"zhongshu(ParentBased(ratio={self.ratio}))"


def sample_ratio_from_env(environ: Mapping[str, str] = os.environ) -> float:
    raw = environ.get(SAMPLE_ENV, "").strip()
    if not raw:
        return DEFAULT_SAMPLE
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ConfigurationError(
            f"{SAMPLE_ENV}={raw!r}: give the share of conversations to trace, 0 to 1 "
            "(0 records nothing, 1 every conversation)"
        )
    return ratio


_SAMPLER = _Sampling(DEFAULT_SAMPLE)


_INHERITED = (T.TENANT, T.SERVICE, T.TASK_ID)
_MAX_STRING = 1024  # an attribute longer than this is cut: spans are for finding, not payloads
_KINDS: dict[SpanKind, T.SpanKind] = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
_STATUSES: dict[trace.StatusCode, T.SpanStatus] = {
    trace.StatusCode.UNSET: "unset",
    trace.StatusCode.OK: "ok",
    trace.StatusCode.ERROR: "error",
}


def span_record(span: ReadableSpan) -> T.SpanRecord:
    """A finished span as the TRACES stream stores it."""
    context = span.context
    assert context is not None
    # The SDK's BoundedAttributes behind a read-only proxy: copying its plain dict is a third of
    # the cost of iterating the mapping (this runs for every exported span).
    held = getattr(span, "_attributes", None)
    plain = getattr(held, "_dict", None)
    attributes: dict[str, Any] = dict(plain if plain is not None else span.attributes or {})
    for key, value in attributes.items():
        if value.__class__ is str and len(value) > _MAX_STRING:
            attributes[key] = value[: _MAX_STRING - 1] + "…"
    service = attributes.pop(T.SERVICE, None) or _service_name(span.resource)
    status = span.status
    parent = span.parent
    return T.SpanRecord(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_id=format(parent.span_id, "016x") if parent else None,
        name=span.name,
        kind=_KINDS.get(span.kind, "internal"),
        service=str(service),
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status=_STATUSES.get(status.status_code, "unset"),
        status_message=status.description or "",
        attributes=attributes,
    )


# By the resource's id, the resource kept alive with its name so the id is never reused: one
# resource per tracer provider, and a process has one (tests a few).
_SERVICE_NAMES: dict[int, tuple[Resource, str]] = {}


def _service_name(resource: Resource) -> str:
    known = _SERVICE_NAMES.get(id(resource))
    if known is None:
        name = str(resource.attributes.get("service.name") or "unknown")
        known = _SERVICE_NAMES[id(resource)] = (resource, name)
    return known[1]


class BusSpanExporter(SpanProcessor):
    """Publishes finished, sampled spans to the TRACES stream (one message per span, its
    ``Nats-Msg-Id`` the trace and span ids) and an index entry for every id a span names
    (``contracts.traces.INDEXED``), so ``zhongshu trace`` finds a conversation by any of them.

    Never in the way of the service: ``on_end`` only appends to a bounded queue (a span beyond
    ``max_queue`` is dropped and counted); the queue is published from the event loop in
    batches, with core NATS publishes (no PubAck awaited: losing a span is acceptable, waiting
    for one is not). Spans recorded before a bus is attached wait in the queue."""

    def __init__(
        self, *, max_queue: int = 20_000, batch: int = 512, interval_s: float = 0.25
    ) -> None:
        self.max_queue, self.batch, self.interval_s = max_queue, batch, interval_s
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._clients: list[NatsClient] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._indexed: dict[tuple[str, str], None] = {}
        self._encode = msgspec.json.Encoder().encode

    # ------------------------------------------------------------------ the bus

    def attach(self, nc: NatsClient) -> None:
        """Publish through ``nc`` from now on (the newest attached client is used)."""
        self._clients.append(nc)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._scheduled = False  # a run scheduled on an earlier loop (tests) never comes
        if self._queue:
            self._schedule(now=True)

    async def detach(self, nc: NatsClient) -> None:
        """Publish what is queued through ``nc`` (its service is stopping), then stop using it."""
        if self._clients and self._clients[-1] is nc:
            await self.flush()
        if nc in self._clients:
            self._clients.remove(nc)

    async def flush(self) -> None:
        """Publish everything queued now, and wait for what is being published."""
        self._scheduled = False
        while self._queue and self._clients:
            await self._publish(self._take())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        nc = self._clients[-1] if self._clients else None
        if nc is not None and nc.is_connected:
            try:
                await nc.flush(timeout=2)
            except Exception as exc:
                log.debug("flushing spans failed: %r", exc)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ SpanProcessor

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """A span takes the tenant, service and task of its in-process parent, so every span
        of a conversation can be found by them."""
        parent = trace.get_current_span(parent_context)
        if not isinstance(parent, ReadableSpan):
            return
        inherited = parent.attributes
        if not inherited:
            return
        own = span.attributes or {}
        for key in _INHERITED:
            if key not in own and key in inherited:
                span.set_attribute(key, inherited[key])

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._queue) >= self.max_queue:
            SPANS_DROPPED.labels("overload").inc()
            return
        self._queue.append(span)
        if not self._scheduled and self._loop is not None:
            self._schedule(now=len(self._queue) >= self.batch)

    def shutdown(self) -> None:
        self._queue.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # ------------------------------------------------------------------ publishing

    def _schedule(self, *, now: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._scheduled = True
        if threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._run)
        elif now:
            loop.call_soon(self._run)
        else:
            loop.call_later(self.interval_s, self._run)

    def _run(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        if not self._clients:
            return  # kept until a bus is attached (or dropped as overload)
        task = asyncio.get_running_loop().create_task(self._publish(self._take()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._queue:  # a full batch more goes at once, a remainder with the next interval
            self._schedule(now=len(self._queue) >= self.batch)

    def _take(self) -> list[ReadableSpan]:
        queue, spans = self._queue, []
        for _ in range(min(self.batch, len(queue))):
            spans.append(queue.popleft())
        return spans

    async def _publish(self, spans: list[ReadableSpan]) -> None:
        while self._clients and self._clients[-1].is_closed:  # its service stopped abruptly
            self._clients.pop()
        nc = self._clients[-1] if self._clients else None
        if nc is None or not nc.is_connected:
            SPANS_DROPPED.labels("unreachable").inc(len(spans))
            return
        sent = 0
        try:
            for span in spans:
                record = span_record(span)
                await nc.publish(
                    subjects.trace_span(record.trace_id),
                    self._encode(record),
                    headers={H.MSG_ID: T.span_msg_id(record.trace_id, record.span_id)},
                )
                sent += 1
                for key in T.INDEXED:
                    value = record.attributes.get(key)
                    if isinstance(value, str) and value:
                        await self._index(nc, value, record.trace_id)
        except Exception as exc:  # the connection's buffer is full, or it closed meanwhile
            SPANS_DROPPED.labels("unreachable").inc(len(spans) - sent)
            log.debug("publishing spans failed: %r", exc)
        SPANS_EXPORTED.inc(sent)

    async def _index(self, nc: NatsClient, key: str, trace_id: str) -> None:
        pair = (key, trace_id)
        if pair in self._indexed:
            return
        if len(self._indexed) >= 8192:
            self._indexed.clear()
        self._indexed[pair] = None
        # No Nats-Msg-Id: a repeated entry (another service indexing the same id) is harmless,
        # the look-up reads the last one, and a publish without headers costs less.
        entry = T.TraceIndexEntry(key=key, trace_id=trace_id)
        await nc.publish(subjects.trace_index(key), self._encode(entry))


BUS_EXPORTER = BusSpanExporter()


def setup_tracing(service_name: str) -> None:
    """Install this process's tracer provider: sampled spans (``ZHONGSHU_TRACE_SAMPLE``, 0-1)
    go to the TRACES stream once a bus is attached (unless ``ZHONGSHU_TRACE_BUS=0``) and over
    OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Trace ids flow through headers and
    logs whether or not a trace is sampled."""
    global _configured_for
    if _configured_for is not None:
        return
    _SAMPLER.set_ratio(sample_ratio_from_env())
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=_SAMPLER
    )
    if os.environ.get(BUS_ENV, "1").strip().lower() not in ("0", "false", "no", "off"):
        provider.add_span_processor(BUS_EXPORTER)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # Imported only when exporting: the protobuf exporter is slow to import.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured_for = service_name


def set_sample_ratio(ratio: float) -> None:
    """Change the share of new traces recorded (tests; in-process services share one)."""
    _SAMPLER.set_ratio(ratio)


def sample_ratio() -> float:
    return _SAMPLER.ratio


def attach_bus(nc: NatsClient) -> None:
    """Export this process's spans through ``nc`` (a service calls this once connected)."""
    BUS_EXPORTER.attach(nc)


async def detach_bus(nc: NatsClient) -> None:
    """Publish the spans still queued through ``nc`` before it is drained."""
    await BUS_EXPORTER.detach(nc)


def shutdown_tracing() -> None:
    """Flush spans still queued for OTLP export (called when a service stops)."""
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


def annotate(**attributes: str | None) -> None:
    """Name what the current span is about (``tenant``, ``task_id``, ...) as
    ``zhongshu.<key>`` attributes, if it is recorded; None values are left out."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for key, value in attributes.items():
        if value:
            span.set_attribute(f"zhongshu.{key}", value)


def describe_envelope(span: trace.Span, envelope: object, msg_id: str | None) -> None:
    """The ids of a consumed envelope on its span (only when the span is recorded): its id, its
    tenant, and the task or platform message it concerns, where the event names one."""
    if msg_id:
        span.set_attribute(T.MESSAGE_ID, msg_id)
    tenant = getattr(envelope, "tenant", None)
    if tenant:
        span.set_attribute(T.TENANT, tenant)
    data = getattr(envelope, "data", None)
    if data is None:
        return
    task_id = getattr(data, "task_id", None)
    if isinstance(task_id, str) and task_id:
        span.set_attribute(T.TASK_ID, task_id)
    origin = getattr(data, "message", None) or data
    platform_message_id = getattr(origin, "platform_message_id", None)
    if isinstance(platform_message_id, str) and platform_message_id:
        span.set_attribute(T.PLATFORM_MESSAGE_ID, platform_message_id)


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
