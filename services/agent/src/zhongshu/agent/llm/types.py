"""The values the LLM client takes and gives, independent of any provider's wire format: the agent
builds these, stores them in memory, and meters them; ``wire.py`` maps them to OpenAI JSON."""

from __future__ import annotations

from typing import Any

import msgspec


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """One function call the model asked for; ``arguments`` is the JSON text exactly as the model
    gave it (it may be invalid JSON: the tool runner decides what to do with that)."""

    id: str
    name: str
    arguments: str


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    role: str
    """``system``, ``user``, ``assistant`` or ``tool``."""
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    """Set on assistant messages that called tools."""
    tool_call_id: str | None = None
    """Set on tool result messages: which call this answers."""


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    parameters: dict[str, Any]
    """A JSON schema object."""


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResult(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = Usage()
    provider: str = ""
    """The provider that answered."""
    model: str = ""
    """The model asked for (``Provider.model``): stable enough for metric labels and cache keys."""
    attempts: int = 1
    """HTTP attempts made for this call, across providers and retries."""


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    """One OpenAI-compatible backend; ``endpoint`` is its base URL (``https://api.deepseek.com/v1``,
    ``http://127.0.0.1:8080/v1``): the client POSTs ``{endpoint}/chat/completions``."""

    name: str
    endpoint: str
    model: str
    api_key: str | None = None

    def __repr__(self) -> str:  # the key must not reach logs through a repr
        key = "None" if self.api_key is None else "'***'"
        return (
            f"Provider(name={self.name!r}, endpoint={self.endpoint!r}, "
            f"model={self.model!r}, api_key={key})"
        )


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream HTTP attempt, for metering (errors by code, latency, limiter wait)."""

    provider: str
    model: str
    attempt: int
    """1 for the call's first attempt, counting across providers."""
    code: str | None
    """None when the attempt answered; else the error's code (``http_429``, ``timeout``…), or
    ``aborted`` when the caller's ``on_text`` raised or the call was cancelled."""
    status: int | None
    """The HTTP status, when one came."""
    duration_s: float
    """From admission by the gate to the end of the answer (or the failure)."""
    gate_wait_s: float = 0.0
    """Time spent waiting for the gate to admit the attempt (QPS slot, concurrency)."""
    waited_s: float = 0.0
    """The backoff slept before this attempt."""
    retry_after_s: float | None = None
    """The provider's hint of when to try again, if it gave one."""
    first_chunk_s: float | None = None
    """Time to the first streamed event (the time to first token, near enough)."""
