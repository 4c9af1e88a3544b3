"""What a trigger may listen to and test: a subject filter under `events.` (other teams' and
devices' events; tokens as `contracts.subjects` builds them) and a JMESPath condition."""

from __future__ import annotations

import re

import jmespath
import jmespath.exceptions

_TOKEN = re.compile(r"^[a-z0-9_-]+$")


def subject_filter_problem(subject: str) -> str | None:
    """Why ``subject`` is not a usable filter under `events.`, or None."""
    tokens = subject.split(".")
    if tokens[0] != "events" or len(tokens) < 2:
        return "the subject must be a filter under `events.`, e.g. `events.iot.*` or `events.>`"
    for index, token in enumerate(tokens[1:], start=1):
        if token == ">":
            if index != len(tokens) - 1:
                return "`>` may only be the last token"
        elif token != "*" and not _TOKEN.fullmatch(token):
            return (
                f"token {token!r} is not a subject token "
                "(lower-case letters, digits, `-`, `_`, or the wildcards `*` and `>`)"
            )
    return None


def condition_problem(condition: str) -> str | None:
    """Why ``condition`` is not a JMESPath expression, or None (empty = every event)."""
    if not condition.strip():
        return None
    try:
        jmespath.compile(condition)
    except jmespath.exceptions.JMESPathError as exc:
        return f"the condition is not valid JMESPath: {exc}"
    return None
