"""Render, from the code, the JSON Schema of every event and the AsyncAPI 3 document of the bus.

The AsyncAPI operations come from a topology (who sends and receives each channel) that the caller
collects from the services' declarations: ``python -m zhongshu.runtime.topology --write docs``
(what `task docs` runs) or ``--check docs``.

Output is deterministic (sorted keys, two-space indent, trailing newline), so a diff of the
committed files is a diff of the contracts.
"""

import ast
import functools
import inspect
import itertools
import json
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import msgspec

from zhongshu.contracts import examples, headers, subjects
from zhongshu.contracts.channels import CHANNELS, Party
from zhongshu.contracts.envelope import Envelope, encode
from zhongshu.contracts.events import ALL_EVENTS, Event, TaskRequested, alerts, audit, chat, tasks

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE: Final = "asyncapi.json"
SCHEMAS_DIR: Final = "schemas"
REGENERATE_HINT: Final = (
    "run `task docs` (or `.tools/bin/uv run python -m zhongshu.runtime.topology --write docs`)"
)

Json = dict[str, Any]


# --- Descriptions ---------------------------------------------------------------------------------


def _struct_classes() -> dict[str, type[msgspec.Struct]]:
    """Every Struct of the events package by class name (the names msgspec gives components)."""
    found: dict[str, type[msgspec.Struct]] = {}
    for module in (chat, alerts, tasks, audit):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, msgspec.Struct):
                found[value.__name__] = value
    return found


@functools.cache
def _attribute_docs(module_name: str) -> dict[str, dict[str, str]]:
    """Attribute docstrings (a string right after an annotated field) of every top-level class
    of a module: {class name: {field: doc}}. msgspec ignores them, but they describe fields best.
    """
    module = sys.modules[module_name]
    source = Path(inspect.getfile(module)).read_text(encoding="utf-8")
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = found.setdefault(node.name, {})
        for field, following in itertools.pairwise(node.body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(following.value.value)
    return found


def _field_docs(cls: type[msgspec.Struct]) -> dict[str, str]:
    """Field docs of a Struct and its bases, by the field's wire name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, msgspec.Struct) and klass is not msgspec.Struct:
            docs.update(_attribute_docs(klass.__module__).get(klass.__name__, {}))
    fields = msgspec.structs.fields(cls)
    return {field.encode_name: docs[field.name] for field in fields if field.name in docs}


def _describe(components: dict[str, Json]) -> None:
    """Clean class docstrings and add field docstrings, in place."""
    classes = _struct_classes()
    for name, schema in components.items():
        cls = Envelope if name.startswith("Envelope_") else classes.get(name)
        if "description" in schema:
            schema["description"] = inspect.cleandoc(schema["description"])
        if cls is None:
            continue
        for wire_name, doc in _field_docs(cls).items():
            prop = schema.get("properties", {}).get(wire_name)
            if prop is not None and "description" not in prop:
                prop["description"] = doc


def _pin_envelope(schema: Json, event: type[Event]) -> None:
    """What the generic Envelope cannot say: `type` names this event and `specversion` is 1.0."""
    props = schema["properties"]
    props["type"]["const"] = event.TYPE
    props["specversion"]["const"] = "1.0"
    if "specversion" not in schema["required"]:
        schema["required"] = ["specversion", *schema["required"]]
    schema["description"] = (
        f"CloudEvents 1.0 structured-mode envelope of `{event.TYPE}`: {_summary(event)}"
    )


def _summary(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")


# --- JSON Schema per event ------------------------------------------------------------------------


def event_schema(event: type[Event]) -> Json:
    """JSON Schema (2020-12) of `Envelope[event]`, as published in docs/schemas/<type>.json."""
    generated = msgspec.json.schema(Envelope[event])  # type: ignore[valid-type]
    defs: dict[str, Json] = generated["$defs"]
    _describe(defs)
    root_name = generated["$ref"].rsplit("/", 1)[-1]
    _pin_envelope(defs[root_name], event)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": event.TYPE,
        "description": inspect.cleandoc(event.__doc__ or ""),
        "$ref": generated["$ref"],
        "$defs": defs,
    }


# --- AsyncAPI -------------------------------------------------------------------------------------


def _header(description: str, **extra: Any) -> Json:
    return {"type": "string", "description": description, **extra}


def _bus_headers() -> Json:
    return {
        "type": "object",
        "properties": {
            headers.MSG_ID: _header("Deduplication id, equal to the envelope `id`."),
            headers.CONTENT_TYPE: _header("Body media type.", const=headers.CLOUDEVENTS_JSON),
            headers.TRACEPARENT: _header("W3C trace context."),
            headers.TRACESTATE: _header("W3C vendor trace state."),
        },
        "required": [headers.MSG_ID],
    }


def _schedule_headers() -> Json:
    return {
        "type": "object",
        "properties": {
            headers.SCHEDULE: _header("`@at <RFC 3339>`, `@every <duration>` or 6-field cron."),
            headers.SCHEDULE_TARGET: _header(
                "Always schedule.{tenant}.{scheduleId}.fired (the schedule's own stream)."
            ),
            headers.SCHEDULE_TIME_ZONE: _header("IANA zone for cron schedules; omit for UTC."),
            headers.MSG_TTL: _header("Optional: when the schedule itself ends."),
        },
        "required": [headers.SCHEDULE, headers.SCHEDULE_TARGET],
    }


def _firing_headers() -> Json:
    return {
        "type": "object",
        "properties": {
            headers.SCHEDULER: _header("Subject of the schedule that fired."),
            headers.SCHEDULE_NEXT: _header(
                "Next firing time, or `purge` for a one-shot; names this firing."
            ),
        },
        "required": [headers.SCHEDULER, headers.SCHEDULE_NEXT],
    }


def _dead_letter_headers() -> Json:
    dlq = {
        headers.DLQ_ERROR: "Last error, one line.",
        headers.DLQ_STREAM: "Stream it was consumed from.",
        headers.DLQ_CONSUMER: "Consumer that gave up.",
        headers.DLQ_SUBJECT: "Original subject.",
        headers.DLQ_SEQUENCE: "Original stream sequence.",
        headers.DLQ_DELIVERIES: "Deliveries before giving up.",
        headers.DLQ_FAILED_AT: "When, RFC 3339 UTC.",
    }
    return {
        "type": "object",
        "properties": {name: _header(text) for name, text in dlq.items()},
        "required": sorted(dlq),
    }


def _message(name: str, payload: str, summary: str, **extra: Any) -> Json:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": headers.CLOUDEVENTS_JSON,
        "payload": {"$ref": f"#/components/schemas/{payload}"},
        "traits": [{"$ref": "#/components/messageTraits/busHeaders"}],
        **extra,
    }


def _examples(
    event: type[Event], extra_headers: Mapping[str, str] | None = None, name: str = ""
) -> list[Json]:
    found: list[Json] = []
    for instance in examples.all_examples():
        if type(instance) is not event:
            continue
        envelope = examples.example_envelope(instance)
        found.append(
            {
                "name": f"{name or event.__name__}{len(found) + 1}",
                "headers": {
                    headers.MSG_ID: envelope.id,
                    headers.CONTENT_TYPE: headers.CLOUDEVENTS_JSON,
                    **(extra_headers or {}),
                },
                "payload": msgspec.json.decode(encode(envelope)),
            }
        )
    return found


def _components() -> Json:
    types: list[Any] = [Envelope[event] for event in ALL_EVENTS]  # type: ignore[valid-type]
    types.append(Envelope[Any])
    _, schemas = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    _describe(schemas)
    for event in ALL_EVENTS:
        _pin_envelope(schemas[f"Envelope_{event.__name__}_"], event)
    schemas["Envelope_Any_"]["description"] = (
        "A CloudEvents 1.0 structured-mode event with any `data`."
    )

    messages: Json = {}
    for event in ALL_EVENTS:
        messages[event.__name__] = _message(
            event.__name__,
            f"Envelope_{event.__name__}_",
            _summary(event),
            description=inspect.cleandoc(event.__doc__ or ""),
            tags=[{"name": event.TYPE}],
            examples=_examples(event),
        )
    messages["TaskScheduled"] = _message(
        "TaskScheduled",
        "Envelope_TaskRequested_",
        "A schedule: a TaskRequested held with Nats-Schedule headers, fired on its schedule.",
        headers=_schedule_headers(),
        examples=_examples(
            TaskRequested,
            {
                headers.SCHEDULE: "0 0 9 * * 1-5",
                headers.SCHEDULE_TARGET: subjects.schedule_fired(examples.TENANT, "daily-report"),
                headers.SCHEDULE_TIME_ZONE: "Asia/Shanghai",
            },
            name="TaskScheduled",
        )[:1],
    )
    messages["TaskScheduleFired"] = _message(
        "TaskScheduleFired",
        "Envelope_TaskRequested_",
        "One firing of a schedule: the schedule's body, stamped by the server.",
        headers=_firing_headers(),
    )
    messages["ExternalEvent"] = _message(
        "ExternalEvent",
        "Envelope_Any_",
        "Any CloudEvents 1.0 event, in structured-mode JSON.",
    )
    dead_letter = _message(
        "DeadLetter",
        "Envelope_Any_",
        "The original message, body and headers unchanged, plus why it was dead-lettered.",
        headers=_dead_letter_headers(),
    )
    dead_letter["payload"] = {"description": "The original body, byte for byte."}
    messages["DeadLetter"] = dead_letter
    return {
        "schemas": schemas,
        "messages": messages,
        "messageTraits": {"busHeaders": {"headers": _bus_headers()}},
    }


def _camel(*parts: str) -> str:
    words = [word for part in parts for word in part.replace("-", " ").split()]
    return words[0] + "".join(word[:1].upper() + word[1:] for word in words[1:])


Topology = Mapping[str, Party]


def asyncapi(topology: Topology) -> Json:
    """The AsyncAPI 3.0.0 document of the bus; `topology` is every party's declared side (the
    services' from their code, see ``zhongshu.runtime.topology``, and EXTERNAL_PARTIES)."""
    channels: Json = {}
    for channel in CHANNELS:
        channels[channel.id] = {
            "address": channel.address,
            "title": channel.id,
            "description": channel.description,
            "parameters": dict(channel.parameters),
            "messages": {
                name: {"$ref": f"#/components/messages/{name}"} for name in channel.messages
            },
            "x-zhongshu-stream": channel.stream.name,
        }
    by_id = {channel.id: channel for channel in CHANNELS}
    operations: Json = {}
    for service, party in topology.items():
        for action, channel_ids in (("send", party.send), ("receive", party.receive)):
            for channel_id in channel_ids:
                channel = by_id[channel_id]
                operations[_camel(service, action, channel_id)] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                    "messages": [
                        {"$ref": f"#/channels/{channel_id}/messages/{name}"}
                        for name in channel.messages
                    ],
                    "tags": [{"name": service}],
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "zhongshu bus",
            "version": metadata.version("zhongshu-contracts"),
            "description": (
                "Every subject of the zhongshu NATS JetStream bus and the CloudEvents it carries. "
                "Generated from libs/contracts and the services' declarations; do not edit by "
                "hand."
            ),
            "tags": [
                {"name": name, "description": party.description} for name, party in topology.items()
            ],
        },
        "defaultContentType": headers.CLOUDEVENTS_JSON,
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "NATS with JetStream (ZHONGSHU_NATS_URL); `zhongshu up` embeds one.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": _components(),
    }


# --- Files ----------------------------------------------------------------------------------------


def _dump(document: Json) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(topology: Topology) -> dict[str, str]:
    """Every generated file, by path relative to the docs directory."""
    files = {f"{SCHEMAS_DIR}/{event.TYPE}.json": _dump(event_schema(event)) for event in ALL_EVENTS}
    files[ASYNCAPI_FILE] = _dump(asyncapi(topology))
    return files


def _stale(docs: Path, wanted: Iterable[str]) -> list[Path]:
    keep = set(wanted)
    folder = docs / SCHEMAS_DIR
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [path for path in found if path.relative_to(docs).as_posix() not in keep]


def write(docs: Path, topology: Topology) -> list[str]:
    """Write every generated file under `docs` and delete schemas of removed events; returns
    the relative paths that changed."""
    changed: list[str] = []
    files = render(topology)
    for relative, text in files.items():
        path = docs / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(relative)
    for path in _stale(docs, files):
        path.unlink()
        changed.append(path.relative_to(docs).as_posix())
    return changed


def check(docs: Path, topology: Topology) -> list[str]:
    """What differs between `docs` and the code, one line per file; empty when in sync."""
    problems: list[str] = []
    files = render(topology)
    for relative, text in files.items():
        path = docs / relative
        if not path.is_file():
            problems.append(f"missing: {relative}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"out of date: {relative}")
    problems.extend(
        f"no longer generated: {path.relative_to(docs).as_posix()}" for path in _stale(docs, files)
    )
    return problems
