"""``zhongshu trace <id>``: one conversation's spans, from the TRACES stream, as a tree.

The id may be a trace id (32 hex digits, as in the logs' ``trace.id``), a task id, an envelope
id (``Nats-Msg-Id``) or a platform message id: each is looked up in the index the services'
exporters keep (``trace.index.<digest>``, the last entry names the newest trace), and the
trace's spans are read by subject (``trace.span.<trace id>``) with direct stream gets. No
consumer is created: reading changes nothing."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import typer
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from rich.markup import escape

from zhongshu.cli.console import CliError, console
from zhongshu.cli.provision_cmd import CLIENT_NAME
from zhongshu.contracts import subjects
from zhongshu.contracts import traces as T
from zhongshu.contracts.streams import TRACES
from zhongshu.runtime import bus

MAX_SPANS = 10_000
CONNECT_TIMEOUT_S = 5.0
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
# What a line shows besides name, service, duration and status: the ids a trace is found by
# and what tells a step's outcome.
SHOWN = (
    T.TASK_ID,
    T.PLATFORM_MESSAGE_ID,
    T.MESSAGE_ID,
    "messaging.destination.name",
    "http.response.status_code",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.tool.name",
    "zhongshu.outcome",
    "error.type",
)
_decode_span = msgspec.json.Decoder(T.SpanRecord).decode
_decode_entry = msgspec.json.Decoder(T.TraceIndexEntry).decode


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: list[T.SpanRecord]
    found_by: str
    """``trace id``, or the kind of index entry that named it."""


async def find_trace(url: str, ref: str) -> Trace:
    """The trace ``ref`` names; ``CliError`` when it names none (or TRACES is missing)."""
    nc = await bus.connect(url, name=CLIENT_NAME, timeout_s=CONNECT_TIMEOUT_S)
    try:
        js = bus.jetstream(nc)
        try:
            await js.stream_info(TRACES.name)
        except NotFoundError:
            raise CliError(
                f"stream {TRACES.name} does not exist: run `zhongshu provision`"
            ) from None
        ref = ref.strip()
        if _TRACE_ID.fullmatch(ref.lower()):
            spans = await read_spans(js, ref.lower())
            if spans:
                return Trace(ref.lower(), spans, "trace id")
        trace_id = await lookup(js, ref)
        if trace_id is None:
            raise CliError(
                f"no trace found for {ref!r}: not a recorded trace id, task id, event id or "
                f"platform message id. Spans are kept {TRACES.max_age_s / 3600:g} h, and only "
                "for sampled conversations (ZHONGSHU_TRACE_SAMPLE)"
            )
        spans = await read_spans(js, trace_id)
        if not spans:
            raise CliError(f"{ref!r} belongs to trace {trace_id}, whose spans have expired")
        return Trace(trace_id, spans, "index")
    finally:
        await nc.close()


async def lookup(js: JetStreamContext, key: str) -> str | None:
    """The newest trace an id was indexed under."""
    try:
        raw = await js.get_last_msg(TRACES.name, subjects.trace_index(key))
    except NotFoundError:
        return None
    entry = _decode_entry(raw.data or b"{}")
    return entry.trace_id if entry.key == key else None


async def read_spans(js: JetStreamContext, trace_id: str) -> list[T.SpanRecord]:
    """Every stored span of the trace, in start order (a span exported twice counts once)."""
    subject = subjects.trace_span(trace_id)
    spans: dict[str, T.SpanRecord] = {}
    seq = 1
    while len(spans) < MAX_SPANS:
        try:
            raw = await js.get_msg(TRACES.name, seq, subject=subject, next=True)
        except NotFoundError:
            break
        try:
            span = _decode_span(raw.data or b"")
        except msgspec.DecodeError:
            pass
        else:
            spans[span.span_id] = span
        seq = int(raw.seq or seq) + 1
    return sorted(spans.values(), key=lambda s: (s.start_ns, s.end_ns))


# --- rendering --------------------------------------------------------------------------------


def tree(spans: Sequence[T.SpanRecord]) -> list[tuple[int, T.SpanRecord]]:
    """(depth, span) in display order: each span under its parent, siblings by start time. A
    span whose parent was not recorded (sampled out, expired) is shown at the top level."""
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[T.SpanRecord]] = defaultdict(list)
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children[parent].append(span)
    ordered: list[tuple[int, T.SpanRecord]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, ()), key=lambda s: s.start_ns):
            ordered.append((depth, span))
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return ordered


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def render(found: Trace) -> list[str]:
    """The trace as plain lines: a header, then one line per span."""
    spans = found.spans
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    tenants = sorted({str(s.attributes[T.TENANT]) for s in spans if T.TENANT in s.attributes})
    services = list(dict.fromkeys(s.service for s in spans))
    lines = [
        f"trace {found.trace_id}: {len(spans)} spans, {(end - start) / 1e6:.1f} ms, "
        f"tenant {', '.join(tenants) or '-'}; services {', '.join(services)}"
    ]
    for depth, span in tree(spans):
        indent = "  " * depth + ("└─ " if depth else "")
        status = "ERROR" if span.status == "error" else "ok"
        if span.status == "error" and span.status_message:
            status += f" ({span.status_message})"
        shown = " ".join(
            f"{key}={_value(span.attributes[key])}" for key in SHOWN if key in span.attributes
        )
        lines.append(
            f"{indent}{span.service}: {span.name}  +{(span.start_ns - start) / 1e6:.1f} ms  "
            f"{span.duration_ms:.1f} ms  {status}" + (f"  {shown}" if shown else "")
        )
    return lines


def as_json(found: Trace) -> dict[str, Any]:
    return {
        "trace_id": found.trace_id,
        "found_by": found.found_by,
        "spans": [
            {"depth": depth, **msgspec.to_builtins(span)} for depth, span in tree(found.spans)
        ],
    }


def run(url: str, ref: str, *, json_output: bool) -> None:
    found = asyncio.run(find_trace(url, ref))
    if json_output:
        typer.echo(json.dumps(as_json(found), indent=2, ensure_ascii=False))
        return
    header, *rows = render(found)
    console.print(f"[bold]{escape(header)}[/]", soft_wrap=True)
    for row in rows:
        style = "red" if " ERROR" in row else ""
        console.print(escape(row), style=style, soft_wrap=True)
