"""Every event survives encode -> decode through the envelope, typed and by registry."""

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import (
    EVENT_TYPES,
    CommandRequested,
    Event,
    MessageReceived,
    ReplyGenerated,
    TaskRequested,
)
from zhongshu.contracts.examples import all_examples, example, example_envelope

EXAMPLES = all_examples()


def _id(event: Event) -> str:
    return type(event).__name__


@pytest.mark.parametrize("event", EXAMPLES, ids=_id)
def test_every_event_round_trips_through_its_typed_decoder(event: Event) -> None:
    envelope = example_envelope(event)
    raw = wire.encode(envelope)
    decoded = wire.decode(raw, type(event))
    assert decoded == envelope
    assert type(decoded.data) is type(event)


@pytest.mark.parametrize("event", EXAMPLES, ids=_id)
def test_every_event_round_trips_through_the_registry(event: Event) -> None:
    raw = wire.encode(example_envelope(event))
    decoded = wire.decode_any(raw)
    assert decoded.data == event
    assert wire.peek_type(raw) == type(event).TYPE
    assert EVENT_TYPES[decoded.type] is type(event)


def test_envelope_type_comes_from_the_event_class() -> None:
    envelope = wire.make_envelope(
        example(TaskRequested), id="t-1", source="zhongshu/gateway", tenant="acme"
    )
    assert envelope.type == "zhongshu.task.task_requested.v1"
    assert envelope.specversion == "1.0"
    assert envelope.time.tzinfo is not None
    assert datetime.now(UTC) - envelope.time < timedelta(seconds=5)


def test_wire_format_uses_cloudevents_names_and_omits_unset_optionals() -> None:
    envelope = wire.make_envelope(
        example(ReplyGenerated),
        id="r-1",
        source="zhongshu/agent",
        tenant="acme",
        conversation_id="oc_1",
        correlation_id="evt-1",
        time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    wire_dict = msgspec.json.decode(wire.encode(envelope))
    assert wire_dict["specversion"] == "1.0"
    assert wire_dict["conversationid"] == "oc_1"
    assert wire_dict["correlationid"] == "evt-1"
    assert wire_dict["time"] == "2025-01-02T03:04:05Z"
    assert "conversation_id" not in wire_dict
    assert "subject" not in wire_dict
    assert "dataschema" not in wire_dict
    assert "datacontenttype" not in wire_dict  # absent means application/json in CloudEvents
    for name in wire_dict:
        assert name == "data" or (name.isalnum() and name.islower()), name


def test_time_keeps_its_utc_offset() -> None:
    shanghai = timezone(timedelta(hours=8))
    at = datetime(2025, 3, 21, 17, 30, tzinfo=shanghai)
    envelope = wire.make_envelope(
        example(TaskRequested), id="t-1", source="s", tenant="acme", time=at
    )
    decoded = wire.decode(wire.encode(envelope), TaskRequested)
    assert decoded.time == at
    assert decoded.time.utcoffset() == timedelta(hours=8)


def test_naive_time_is_rejected_by_readers() -> None:
    raw = wire.encode(example_envelope(example(TaskRequested))).replace(
        b'"2025-03-21T09:30:00Z"', b'"2025-03-21T09:30:00"'
    )
    with pytest.raises(msgspec.ValidationError, match="time"):
        wire.decode_any(raw)


def test_typed_decode_refuses_another_event_type() -> None:
    raw = wire.encode(example_envelope(example(MessageReceived)))
    with pytest.raises(wire.UnexpectedEventType) as caught:
        wire.decode(raw, CommandRequested)
    assert isinstance(caught.value, msgspec.DecodeError)


def test_unknown_event_type_is_a_decode_error_naming_the_type() -> None:
    raw = (
        b'{"specversion":"1.0","id":"1","source":"team-x","type":"com.example.thing.v1",'
        b'"time":"2025-01-01T00:00:00Z","data":{}}'
    )
    with pytest.raises(msgspec.DecodeError, match=r"com\.example\.thing\.v1"):
        wire.decode_any(raw)


def test_command_needs_exactly_one_origin() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        CommandRequested(command="help")
    message = example(MessageReceived)
    assert CommandRequested(command="help", message=message).origin is message


def test_command_without_origin_is_rejected_by_readers() -> None:
    raw = msgspec.json.encode(
        {
            "specversion": "1.0",
            "id": "c-1",
            "source": "s",
            "type": CommandRequested.TYPE,
            "time": "2025-01-01T00:00:00Z",
            "data": {"command": "help"},
        }
    )
    with pytest.raises(msgspec.ValidationError, match="exactly one"):
        wire.decode_any(raw)


def test_task_without_work_is_rejected() -> None:
    with pytest.raises(ValueError, match="prompt"):
        TaskRequested(task_id="t", tenant="acme", requested_by="u", origin="api")


def test_decoder_is_cached_per_event_class() -> None:
    assert wire.decoder(MessageReceived) is wire.decoder(MessageReceived)
    assert len({id(wire.decoder(cls)) for cls in (MessageReceived, ReplyGenerated)}) == 2


def test_foreign_cloudevents_decode_untyped() -> None:
    raw = (
        b'{"specversion":"1.0","id":"1","source":"team-x","type":"com.example.thing.v1",'
        b'"time":"2025-01-01T00:00:00+08:00","data":{"deploy":"finished","n":3}}'
    )
    decoded = wire.decode_untyped(raw)
    assert decoded.type == "com.example.thing.v1"
    assert decoded.data == {"deploy": "finished", "n": 3}
