"""The tool registry: what the model is offered, and a call that never crashes a task.

A tool's failure (bad arguments, an exception, an unknown name) becomes its result text, so the
model can recover or explain; the task goes on and the call is still recorded as a task event."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from zhongshu.agent.llm.types import ToolCall, ToolSpec
from zhongshu.contracts.events import AuditRecorded, ReplyGenerated

log = logging.getLogger("zhongshu.agent.tools")
_TRACER = trace.get_tracer("zhongshu.agent")

RESULT_LIMIT: Final = 4000
"""Characters of a tool result the model sees; more would crowd out the conversation."""

PublishReply = Callable[[ReplyGenerated], Awaitable[None]]
PublishAudit = Callable[[AuditRecorded, str], Awaitable[None]]
"""``(record, stage)``: onto the tenant's audit trail, its id derived from the task and
``stage`` (a rerun publishes the same record, dropped as a duplicate)."""


@dataclass(frozen=True)
class ToolContext:
    """Who is asking: tools act within the task's tenant and on the user's behalf."""

    tenant: str
    task_id: str
    user: str
    app: str | None
    publish_reply: PublishReply
    publish_audit: PublishAudit | None = None


class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    async def __call__(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str: ...


class ToolFailed(Exception):
    """A tool refused or failed; its message is shown to the model."""


@dataclass(frozen=True)
class ToolOutcome:
    text: str
    ok: bool
    duration_ms: int


@dataclass(frozen=True)
class FunctionTool:
    """A tool from a spec and a coroutine function."""

    spec: ToolSpec
    run: Callable[[Mapping[str, Any], ToolContext], Awaitable[str]]

    async def __call__(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        return await self.run(arguments, ctx)


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.spec.name in self._tools:
            raise ValueError(f"two tools are named {tool.spec.name!r}")
        self._tools[tool.spec.name] = tool

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec for tool in self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    async def call(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        """One tool call, as an ``execute_tool <name>`` span (GenAI conventions; the arguments
        and the result stay out of it: they may hold what users wrote)."""
        started = time.perf_counter()
        ok = False
        with _TRACER.start_as_current_span(
            f"execute_tool {call.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.id,
            },
        ) as span:
            try:
                tool = self._tools.get(call.name)
                if tool is None:
                    raise ToolFailed(f"no tool named {call.name!r}")
                arguments = parse_arguments(call.arguments)
                text = await tool(arguments, ctx)
                ok = True
            except ToolFailed as exc:
                text = f"error: {exc}"
                span.set_status(StatusCode.ERROR, "tool_failed")
            except Exception as exc:  # a tool's bug must not end the task
                log.exception("tool %s failed", call.name)
                text = f"error: the tool failed ({type(exc).__name__})"
                span.set_status(StatusCode.ERROR, type(exc).__name__)
        elapsed = round((time.perf_counter() - started) * 1000)
        return ToolOutcome(truncate(text), ok, elapsed)


def parse_arguments(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ToolFailed(f"arguments are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolFailed("arguments must be a JSON object")
    return value


def truncate(text: str, limit: int = RESULT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
