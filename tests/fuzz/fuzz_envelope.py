"""The envelope decoder every consumer runs on what it reads from the bus: ``decode_any`` on
mutated copies of every example event (libs/contracts). Property: ``msgspec.DecodeError`` (its
``ValidationError`` and ``UnknownEventType`` included), or an envelope that encodes and decodes
back to itself; never any other exception."""

from __future__ import annotations

import json

import msgspec
from fuzzlib import Draw, json_input, seed_inputs

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.examples import all_examples, example_envelope

DOCUMENTS = [json.loads(wire.encode(example_envelope(event))) for event in all_examples()]
SEEDS = seed_inputs(DOCUMENTS)


def check(data: bytes) -> None:
    raw = json_input(Draw(data), DOCUMENTS)
    try:
        envelope = wire.decode_any(raw)
    except msgspec.DecodeError:
        return
    again = wire.decode_any(wire.encode(envelope))
    assert again == envelope, (envelope, again)
