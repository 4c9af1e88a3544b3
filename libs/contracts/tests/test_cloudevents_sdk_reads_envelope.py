"""Other teams use CloudEvents SDKs: the official Python SDK must read our bytes as they are."""

from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.http import from_json

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers
from zhongshu.contracts.events import Event, MessageReceived
from zhongshu.contracts.examples import all_examples, example, example_envelope


def _data(event: Event) -> Any:
    import msgspec

    return msgspec.json.decode(msgspec.json.encode(event))


@pytest.mark.parametrize("event", all_examples(), ids=lambda e: type(e).__name__)
def test_cloudevents_core_reads_every_event_in_structured_mode(event: Event) -> None:
    envelope = example_envelope(event)
    message = HTTPMessage(
        headers={"content-type": headers.CLOUDEVENTS_JSON}, body=wire.encode(envelope)
    )

    parsed = from_structured(message, JSONFormat())

    assert isinstance(parsed, CloudEvent)
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == envelope.id
    assert parsed.get_type() == type(event).TYPE
    assert parsed.get_source() == envelope.source
    assert parsed.get_time() == envelope.time
    assert parsed.get_data() == _data(event)
    extensions = parsed.get_extension
    assert extensions("conversationid") == envelope.conversation_id
    assert extensions("correlationid") == envelope.correlation_id
    assert extensions("tenant") == envelope.tenant


def test_cloudevents_v1_api_reads_our_bytes() -> None:
    envelope = example_envelope(example(MessageReceived))

    parsed = from_json(wire.encode(envelope))

    assert parsed["type"] == MessageReceived.TYPE
    assert parsed["conversationid"] == envelope.conversation_id
    assert parsed["correlationid"] == envelope.correlation_id
    assert parsed.data == _data(envelope.data)


def test_we_read_what_the_cloudevents_sdk_writes() -> None:
    event = example(MessageReceived)
    sdk_event = CloudEvent(
        {
            "id": "from-another-team",
            "source": "urn:team:ops",
            "type": MessageReceived.TYPE,
            "tenant": "acme",
            "correlationid": "c-9",
        },
        _data(event),
    )

    decoded = wire.decode_any(JSONFormat().write(sdk_event))

    assert decoded.data == event
    assert decoded.tenant == "acme"
    assert decoded.correlation_id == "c-9"
    assert decoded.time.tzinfo is not None
