"""Server-sent events, reduced to what chat completions use: the ``data`` of each event.

Lenient the way providers need: ``data:`` with or without the space, comments and ``event:`` /
``id:`` / ``retry:`` fields ignored, and events that are not separated by a blank line (some
gateways send one ``data:`` line per chunk and nothing between) still come out one by one."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable

DONE = "[DONE]"


async def sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """Yield each event's data (multi-line data joined with newlines, as the SSE spec says)."""
    pending: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if pending:
                yield "\n".join(pending)
                pending = []
            continue
        if not line.startswith("data:"):
            continue  # a comment (":" keep-alive) or a field we do not use
        data = line[5:]
        if data.startswith(" "):
            data = data[1:]
        if pending and _complete("\n".join(pending)):
            yield "\n".join(pending)  # the blank line between events was left out
            pending = []
        pending.append(data)
    if pending:
        yield "\n".join(pending)


def _complete(data: str) -> bool:
    """Whether ``data`` is a whole event payload on its own."""
    if data == DONE:
        return True
    try:
        json.loads(data)
    except ValueError:
        return False
    return True
