"""The generated JSON Schemas and AsyncAPI document are deterministic and internally sound."""

import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import schema, streams
from zhongshu.contracts.channels import EXTERNAL_PARTIES
from zhongshu.contracts.events import ALL_EVENTS, EVENT_TYPES, Event
from zhongshu.contracts.examples import all_examples, example_envelope

DOCS = Path(__file__).resolve().parents[3] / "docs"


# The committed files against the services' declared topology: libs/runtime/tests/test_topology.py.
# Here any topology will do: the non-service parties.
TOPOLOGY = dict(EXTERNAL_PARTIES)


def test_check_reports_edited_missing_and_stale_files(tmp_path: Path) -> None:
    schema.write(tmp_path, TOPOLOGY)
    assert schema.check(tmp_path, TOPOLOGY) == []
    (tmp_path / schema.ASYNCAPI_FILE).write_text("{}\n")
    first = next((tmp_path / schema.SCHEMAS_DIR).glob("*.json"))
    first.unlink()
    (tmp_path / schema.SCHEMAS_DIR / "zhongshu.gone.removed.v1.json").write_text("{}\n")
    problems = schema.check(tmp_path, TOPOLOGY)
    assert f"out of date: {schema.ASYNCAPI_FILE}" in problems
    assert f"missing: {schema.SCHEMAS_DIR}/{first.name}" in problems
    assert f"no longer generated: {schema.SCHEMAS_DIR}/zhongshu.gone.removed.v1.json" in problems
    schema.write(tmp_path, TOPOLOGY)
    assert schema.check(tmp_path, TOPOLOGY) == []


def test_output_is_deterministic() -> None:
    assert schema.render(TOPOLOGY) == schema.render(TOPOLOGY)
    for text in schema.render(TOPOLOGY).values():
        assert text.endswith("}\n")


@pytest.mark.parametrize("event", all_examples(), ids=lambda e: type(e).__name__)
def test_every_example_validates_against_its_published_schema(event: Event) -> None:
    published = schema.event_schema(type(event))
    jsonschema.Draft202012Validator.check_schema(published)
    instance = msgspec.json.decode(wire.encode(example_envelope(event)))
    jsonschema.Draft202012Validator(published).validate(instance)


def test_schema_rejects_a_wrong_type_and_a_missing_specversion() -> None:
    event = all_examples()[0]
    published = schema.event_schema(type(event))
    instance = msgspec.json.decode(wire.encode(example_envelope(event)))
    validator = jsonschema.Draft202012Validator(published)
    assert not validator.is_valid({**instance, "type": "zhongshu.other.v1"})
    assert not validator.is_valid({k: v for k, v in instance.items() if k != "specversion"})


# --- AsyncAPI -------------------------------------------------------------------------------------


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are allowed: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"unresolved $ref {ref}"
        assert part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = msgspec.json.decode((DOCS / schema.ASYNCAPI_FILE).read_bytes())
    return document


def test_asyncapi_is_version_3_with_a_nats_server(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"]
    assert asyncapi["info"]["version"]
    assert {server["protocol"] for server in asyncapi["servers"].values()} == {"nats"}


def test_every_reference_in_asyncapi_resolves(asyncapi: dict[str, Any]) -> None:
    refs = _refs(asyncapi)
    assert len(refs) > 100
    for ref in refs:
        _resolve(asyncapi, ref)


def test_channel_parameters_match_their_addresses(asyncapi: dict[str, Any]) -> None:
    for channel_id, channel in asyncapi["channels"].items():
        names = re.findall(r"\{([^}]+)\}", channel["address"])
        assert sorted(names) == sorted(channel.get("parameters", {})), channel_id


def test_channels_live_in_the_stream_they_name(asyncapi: dict[str, Any]) -> None:
    for channel_id, channel in asyncapi["channels"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", channel["address"])
        assert streams.stream_for_subject(concrete).name == channel["x-zhongshu-stream"], channel_id


def test_operations_use_messages_of_their_own_channel(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["operations"]
    for operation_id, operation in asyncapi["operations"].items():
        assert operation["action"] in {"send", "receive"}, operation_id
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), operation_id


def test_every_event_is_a_message_on_some_channel(asyncapi: dict[str, Any]) -> None:
    carried = {
        ref.rsplit("/", 1)[-1]
        for channel in asyncapi["channels"].values()
        for ref in _refs(channel["messages"])
    }
    assert {cls.__name__ for cls in ALL_EVENTS} <= carried
    for cls in EVENT_TYPES.values():
        message = asyncapi["components"]["messages"][cls.__name__]
        assert message["payload"]["$ref"].endswith(f"Envelope_{cls.__name__}_")
        assert message["examples"], cls.__name__


def test_asyncapi_examples_validate_against_their_payload_schemas(asyncapi: dict[str, Any]) -> None:
    components = asyncapi["components"]
    for name, message in components["messages"].items():
        payload_ref = message["payload"].get("$ref")
        if payload_ref is None:
            continue
        for sample in message.get("examples", []):
            validator = jsonschema.Draft202012Validator(
                {**_resolve(asyncapi, payload_ref), "components": components}
            )
            errors = list(validator.iter_errors(sample["payload"]))
            assert not errors, f"{name}: {errors[0].message}"
