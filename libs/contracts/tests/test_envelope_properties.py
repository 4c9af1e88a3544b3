"""encode → decode is the identity for generated events of every type in `EVENT_TYPES`. Each is
made from the type's example (libs/contracts examples.py) by giving its free fields any value
Hypothesis draws: any text where the schema takes any string, any number where it takes any
number; fields the schema constrains (enums, patterns, times) keep the example's value."""

from collections.abc import Callable
from datetime import UTC
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import EVENT_TYPES, Event
from zhongshu.contracts.examples import all_examples

# No deadline and no too-slow check: a busy CI machine must not fail a property by its clock.
PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
TEMPLATES: dict[str, Event] = {}
for _event in all_examples():
    TEMPLATES.setdefault(type(_event).TYPE, _event)
# Probes: a value is free when the example still validates with the probe in its place.
_PROBES: dict[type, Any] = {str: "probé . * > \x00", int: 1234567, float: 0.125, bool: True}
_DRAWN: dict[type, st.SearchStrategy[Any]] = {
    str: st.text(),
    int: st.integers(min_value=0, max_value=2**53),
    float: st.floats(min_value=0, max_value=1e12, allow_nan=False),
    bool: st.booleans(),
}


def _free(cls: type[Event], set_at: Callable[[Any], Any], value: Any) -> bool:
    try:
        msgspec.convert(set_at(value), cls)
    except msgspec.ValidationError:
        return False
    return True


def variants(event: Event) -> st.SearchStrategy[Event]:
    """Events like ``event`` whose free leaves vary."""
    cls = type(event)
    root = msgspec.to_builtins(event)

    def walk(node: Any, rebuild: Callable[[Any], Any]) -> st.SearchStrategy[Any]:
        if isinstance(node, dict):
            return st.fixed_dictionaries(
                {
                    key: walk(item, lambda new, key=key: rebuild({**node, key: new}))
                    for key, item in node.items()
                }
            )
        if isinstance(node, list | tuple):
            return st.tuples(
                *(
                    walk(item, lambda new, i=i: rebuild([*node[:i], new, *node[i + 1 :]]))
                    for i, item in enumerate(node)
                )
            ).map(list)
        kind = type(node)
        if kind in _DRAWN and _free(cls, rebuild, _PROBES[kind]):
            return st.one_of(st.just(node), _DRAWN[kind])
        return st.just(node)

    return walk(root, lambda new: new).map(lambda document: msgspec.convert(document, cls))


ENVELOPE_ATTRIBUTES = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1),
        "source": st.text(min_size=1),
        "tenant": st.text(),
        "conversation_id": st.none() | st.text(),
        "correlation_id": st.none() | st.text(),
        "time": st.datetimes(timezones=st.just(UTC)),
    }
)


def test_every_event_type_has_a_template() -> None:
    assert set(TEMPLATES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_encode_then_decode_is_the_identity(event_type: str) -> None:
    template = TEMPLATES[event_type]

    @PROPERTY
    @given(variants(template), ENVELOPE_ATTRIBUTES)
    def round_trip(event: Event, attributes: dict[str, Any]) -> None:
        envelope = wire.make_envelope(event, **attributes)
        raw = wire.encode(envelope)
        assert wire.decode_any(raw) == envelope
        assert wire.decode(raw, type(event)) == envelope
        assert wire.peek_type(raw) == event_type

    round_trip()


READERS: dict[str, Callable[[bytes], Any]] = {
    "decode_any": wire.decode_any,
    "decode": lambda raw: wire.decode(raw, type(TEMPLATES[next(iter(TEMPLATES))])),
    "peek_type": wire.peek_type,
    "decode_untyped": wire.decode_untyped,
}
_VALID = wire.encode(
    wire.make_envelope(next(iter(TEMPLATES.values())), id="e", source="s", tenant="t")
)
MALFORMED = {
    # Found by fuzzing: msgspec raises UnicodeDecodeError and RecursionError for these, which
    # readers that skip or dead-letter on DecodeError let through.
    "not UTF-8": _VALID.replace(b'"tenant":"t"', b'"tenant":"\xff"').replace(
        b'"type":"', b'"type":"\xff'
    ),
    "not UTF-8 past the type": _VALID.replace(b'"tenant":"t"', b'"tenant":"\xff"'),
    "nested past the parser": _VALID[:-1] + b',"x":' + b"[" * 100_000 + b"}",
}


@pytest.mark.parametrize("reader", READERS.values(), ids=list(READERS))
@pytest.mark.parametrize("raw", MALFORMED.values(), ids=list(MALFORMED))
def test_bytes_that_are_no_envelope_are_a_decode_error(
    reader: Callable[[bytes], Any], raw: bytes
) -> None:
    if reader is wire.peek_type and raw == MALFORMED["not UTF-8 past the type"]:
        assert wire.peek_type(raw)  # it reads the type alone, and that is readable
        return
    with pytest.raises(msgspec.DecodeError):
        reader(raw)
