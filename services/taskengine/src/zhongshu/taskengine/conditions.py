"""Trigger conditions: a JMESPath expression evaluated on an event's CloudEvents JSON, true when
the result is truthy by JMESPath's rules (``false``, ``null``, ``""``, ``[]`` and ``{}`` are false;
``0`` is true). JMESPath because it is declarative, safe on untrusted input and has one spec for
every language, so the gateway and the engine agree on what a condition means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult


class ConditionError(ValueError):
    """A condition that does not parse, or that failed on one event."""


@dataclass(frozen=True)
class Condition:
    source: str
    _parsed: ParsedResult | None = field(default=None, compare=False, repr=False)

    def holds(self, event: dict[str, Any]) -> bool:
        """Whether the event satisfies it (an empty condition: always)."""
        if self._parsed is None:
            return True
        try:
            result = self._parsed.search(event)
        except Exception as exc:  # jmespath also lets TypeError out (comparing "hot" > 30)
            raise ConditionError(f"condition {self.source!r} failed: {exc!r}") from exc
        return _truthy(result)


def _truthy(value: Any) -> bool:
    # Not `value not in (None, False, ...)`: Python would count 0 as False, JMESPath does not.
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and not value)


def compile_condition(source: str) -> Condition:
    """Parse once when the trigger is loaded, not per event."""
    if not source.strip():
        return Condition(source)
    try:
        return Condition(source, jmespath.compile(source))
    except jmespath.exceptions.JMESPathError as exc:
        raise ConditionError(f"condition {source!r} is not valid JMESPath: {exc}") from exc
