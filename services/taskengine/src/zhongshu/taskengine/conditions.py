"""Trigger conditions: a JMESPath expression evaluated on an event's CloudEvents JSON, true when
the result is truthy by JMESPath's rules (``false``, ``null``, ``""``, ``[]`` and ``{}`` are false;
``0`` is true). JMESPath because it is declarative, safe on untrusted input and has one spec for
every language; whether one parses is `contracts.validation`'s check, which the gateway runs
too, so both refuse the same conditions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jmespath.parser import ParsedResult

from zhongshu.contracts.validation import parse_condition


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
    try:
        return Condition(source, parse_condition(source))
    except ValueError as exc:
        raise ConditionError(str(exc)) from exc
