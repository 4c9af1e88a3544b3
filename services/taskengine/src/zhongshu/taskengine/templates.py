"""``{{root.path}}`` placeholders: ``{{event.data.temperature}}`` in a trigger's task template,
``{{steps.fetch.json.items.0}}`` and ``{{run.city}}`` in a workflow step's config.

Deliberately not a template language: one lookup per placeholder and nothing to execute, so a
definition written by an API client cannot run code in the engine. The syntax, and which
placeholders a definition may hold, are `contracts.validation`'s."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from zhongshu.contracts.validation import PLACEHOLDER

_MISSING: Final = object()


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (list items by index: ``items.0``), or ``None``."""
    value = _lookup(context, path)
    return None if value is _MISSING else value


def _lookup(context: Mapping[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def as_text(value: Any) -> str:
    """How a value reads inside text: strings as they are, missing as nothing, the rest as
    JSON (so ``true`` and ``null`` read as JSON does, not as Python's ``True``)."""
    if value is None or value is _MISSING:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Replace every placeholder in ``text``; one that names nothing becomes empty."""
    return PLACEHOLDER.sub(lambda m: as_text(_lookup(context, m.group(1))), text)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render placeholders in every string of a JSON-like value. A string that is exactly one
    placeholder becomes the value it names, type and all (``"{{event.data.temperature}}"`` is
    ``35``, not ``"35"``), so structured inputs survive the trip."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value.strip())
        if whole is not None:
            return lookup(context, whole.group(1))
        return render_text(value, context)
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, context) for item in value]
    return value
