"""What every harness shares: reading a fuzzer's bytes as choices, and mutating a realistic JSON
document with them (a number where a list belongs, a key gone, a subtree moved), so most inputs
get past the parser and the signature and reach the code that reads the fields.

A harness module defines ``SEEDS`` (realistic inputs, as bytes) and ``check(data)``: the property,
which returns on success or on an expected rejection, and lets any other exception out. Neither
depends on atheris: the runner's engine (``engine.py``) feeds them with atheris, and the replay
test feeds them the seeds and every saved crash."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# Values that have broken parsers before: huge, negative, fractional, empty, wrong kind.
_INTS = (0, 1, -1, 2, 2**31, 2**63, -(2**63), 10**30, 1700000000000)
_FLOATS = (0.5, -1.5, 1e308, -1e308, 1e-308, float("inf"), float("nan"))
_STRINGS = ("", " ", "a", "0", "-1", "1e999", "null", "[]", "{}", "@_user_1", "@_all", "\x00", "é")


MAX_SIZE = 64 * 1024


class Draw:
    """Choices read from the front of the fuzzer's bytes; zeros once they run out, so every input,
    however short, means something."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        """A choice among ``n`` (two bytes when ``n`` exceeds one's range)."""
        if n <= 1:
            return 0
        value = self.byte() if n <= 256 else self.byte() << 8 | self.byte()
        return value % n

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.below(len(options))]

    def text(self) -> str:
        size = self.below(24)
        raw = bytes(self.byte() for _ in range(size))
        return raw.decode("utf-8", "replace")

    def rest(self) -> bytes:
        rest = self.data[self.pos :]
        self.pos = len(self.data)
        return rest


def value(draw: Draw, depth: int = 0) -> Any:
    """Any JSON value (nested at most three deep)."""
    kind = draw.below(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return draw.byte() % 2 == 0
    if kind == 2:
        return draw.pick(_INTS)
    if kind == 3:
        return draw.pick(_FLOATS)
    if kind == 4:
        return draw.pick(_STRINGS)
    if kind == 5:
        return draw.text()
    if kind in (6, 7):
        return [value(draw, depth + 1) for _ in range(draw.below(4))]
    return {
        draw.pick(_STRINGS[1:]) + draw.text(): value(draw, depth + 1) for _ in range(draw.below(4))
    }


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) in the document, depth first."""
    if isinstance(node, dict):
        for key in list(node):
            out.append((node, key))
            _slots(node[key], out)
    elif isinstance(node, list):
        for index in range(len(node)):
            out.append((node, index))
            _slots(node[index], out)
    return out


def _embedded(node: Any) -> Any:
    """The object or array a string holds as JSON, if it does."""
    if not isinstance(node, str) or not node.startswith(("{", "[")):
        return None
    try:
        return json.loads(node)
    except ValueError:
        return None


def mutate(document: Any, draw: Draw, *, nested: bool = False) -> Any:
    """``document`` (a fresh copy) after one to four mutations chosen by ``draw``. Moved
    subtrees and re-escaped JSON strings can double a document: past ``MAX_SIZE`` it stops, so
    the harness measures the target, not its own copying."""
    root = {"": json.loads(json.dumps(document))}
    for _ in range(1 + draw.below(4)):
        slots = _slots(root, [])[1:] or _slots(root, [])
        container, key = slots[draw.below(len(slots))]
        action = draw.below(7)
        inner = _embedded(container[key])
        if action == 6 and inner is not None and not nested:  # JSON in a string (content)
            container[key] = json.dumps(mutate(inner, draw, nested=True), ensure_ascii=False)
        elif action == 0 and isinstance(container, dict) and container is not root:
            del container[key]
        elif action == 1:  # another part of the document, moved here
            _, source_key = donor = slots[draw.below(len(slots))]
            container[key] = json.loads(json.dumps(donor[0][source_key]))
        elif action == 2:
            container[key] = [container[key]]
        elif action == 3 and isinstance(container, dict):
            container[draw.pick(_STRINGS) + draw.text()] = value(draw)
        else:
            container[key] = value(draw)
        if len(json.dumps(root)) > MAX_SIZE:
            break
    return root[""]


def json_input(draw: Draw, seeds: Sequence[Any]) -> bytes:
    """The bytes a harness feeds its target: a mutated seed document most of the time, the rest of
    the raw input otherwise (the parser's own inputs, and the seeds exactly as they are)."""
    if draw.byte() % 8 == 0:
        return draw.rest()
    document = mutate(draw.pick(seeds), draw)
    return json.dumps(document, ensure_ascii=draw.byte() % 2 == 0).encode()


def seed_inputs(documents: Sequence[Any], prefix: bytes = b"") -> list[bytes]:
    """Fuzzer inputs that make :func:`json_input` return each document unchanged."""
    return [prefix + b"\x00" + json.dumps(doc, ensure_ascii=False).encode() for doc in documents]
