"""Decoding and encoding stay typed msgspec passes: microseconds per ~1 KB event, not tens."""

import timeit

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import MessageReceived
from zhongshu.contracts.examples import example, example_envelope

# Measured about 4 us (typed) and 6 us (registry) per round trip on the dev box. The bound is
# loose so a loaded CI machine passes, yet a dict round trip or a validating model layer fails.
BOUND_US = 25.0


def _best_microseconds(statement: str, scope: dict[str, object]) -> float:
    runs = timeit.repeat(statement, globals=scope, number=2000, repeat=7)
    return min(runs) / 2000 * 1e6


def test_typed_round_trip_of_a_1kb_message_takes_microseconds() -> None:
    raw = wire.encode(example_envelope(example(MessageReceived)))
    assert 900 <= len(raw) <= 1400
    decoder = wire.decoder(MessageReceived)
    scope: dict[str, object] = {"wire": wire, "decoder": decoder, "raw": raw}

    assert _best_microseconds("wire.encode(decoder.decode(raw))", scope) < BOUND_US


def test_registry_round_trip_of_a_1kb_message_takes_microseconds() -> None:
    raw = wire.encode(example_envelope(example(MessageReceived)))
    scope: dict[str, object] = {"wire": wire, "raw": raw}

    assert _best_microseconds("wire.encode(wire.decode_any(raw))", scope) < BOUND_US
