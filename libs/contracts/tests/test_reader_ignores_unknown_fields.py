"""Within v1 changes are additive: a reader must accept fields it does not know yet."""

import msgspec

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import MessageReceived, ReplyGenerated
from zhongshu.contracts.examples import example, example_envelope


def _with_additions(raw: bytes) -> bytes:
    document = msgspec.json.decode(raw)
    document["futureattribute"] = {"nested": [1, 2, 3]}
    document["data"]["future_field"] = "added in a later v1"
    document["data"]["sender"]["future_sender_field"] = 7
    document["data"]["reply_handle"]["future_handle_field"] = None
    return msgspec.json.encode(document)


def test_reader_ignores_unknown_envelope_and_event_fields() -> None:
    envelope = example_envelope(example(MessageReceived))
    raw = _with_additions(wire.encode(envelope))

    assert wire.decode(raw, MessageReceived) == envelope
    assert wire.decode_any(raw) == envelope


def test_reader_fills_defaults_for_fields_a_writer_left_out() -> None:
    minimal = msgspec.json.encode(
        {
            "specversion": "1.0",
            "id": "r-1",
            "source": "older-writer",
            "type": ReplyGenerated.TYPE,
            "time": "2025-01-01T00:00:00+08:00",
            "data": {
                "reply_id": "r-1",
                "platform": "feishu",
                "app": "acme-feishu",
                "tenant": "acme",
                "chat_id": "oc_1",
            },
        }
    )
    reply = wire.decode(minimal, ReplyGenerated).data
    assert (reply.kind, reply.chunk_index, reply.final, reply.text) == ("text", 0, True, "")


def test_missing_specversion_reads_as_1_0() -> None:
    document = msgspec.json.decode(wire.encode(example_envelope(example(MessageReceived))))
    del document["specversion"]
    assert wire.decode_any(msgspec.json.encode(document)).specversion == "1.0"
