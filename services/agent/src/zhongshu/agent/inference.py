"""One answer from the model: the cache first (R20), then the client (QPS-gated, retried,
with fallback), then as many tool rounds as the model asks for, up to the configured limit.

A cached or coalesced answer arrives whole (nothing streamed); an answer computed here streams
through ``on_text``. Failures of the model end in ``LLMGaveUp``; tool failures do not (the model
sees them as results)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from zhongshu.agent.adapters.inference_cache import InferenceCache, fingerprint
from zhongshu.agent.llm.client import LLMClient
from zhongshu.agent.llm.errors import LLMError, LLMGaveUp
from zhongshu.agent.llm.types import ChatMessage, ChatRequest, ChatResult
from zhongshu.agent.metrics import TOOL_CALLS
from zhongshu.agent.models import ModelSetup
from zhongshu.agent.tools.registry import ToolContext, ToolRegistry

OnText = Callable[[str], Awaitable[None]]
OnTool = Callable[[str, str, str, bool, int], Awaitable[None]]
"""(tool, arguments, result, ok, duration_ms): recorded as a task event."""
OnUpstream = Callable[[], Awaitable[None]]
"""Awaited before each call that goes to the model (not for a cached or coalesced answer)."""

_encode = msgspec.json.encode
_decode_result = msgspec.json.Decoder(ChatResult).decode


class NoModelConfigured(Exception):
    """There is no provider to ask; the user is told which setting to give."""


@dataclass(frozen=True)
class Answer:
    text: str
    cached: bool
    """Every model call of this answer came from the cache (or a coalesced call)."""
    tool_calls: int = 0


class Inference:
    def __init__(self, cache: InferenceCache | None) -> None:
        self._cache = cache

    async def answer(
        self,
        client: LLMClient | None,
        setup: ModelSetup | None,
        messages: tuple[ChatMessage, ...],
        *,
        tools: ToolRegistry,
        tool_context: ToolContext,
        max_rounds: int,
        cacheable: bool,
        on_text: OnText | None = None,
        on_tool: OnTool | None = None,
        on_upstream: OnUpstream | None = None,
    ) -> Answer:
        if client is None or setup is None:
            raise NoModelConfigured
        history = list(messages)
        cached = True
        calls = 0
        for round_ in range(max_rounds + 1):
            offered = tools.specs if round_ < max_rounds else ()
            request = ChatRequest(
                messages=tuple(history),
                tools=offered,
                temperature=setup.temperature,
                max_tokens=setup.max_tokens,
            )
            result, from_cache = await self._call(
                client, setup, request, on_text, cacheable, on_upstream
            )
            cached = cached and from_cache
            if not result.tool_calls:
                return Answer(result.text, cached, calls)
            history.append(
                ChatMessage(
                    role="assistant", content=result.text or None, tool_calls=result.tool_calls
                )
            )
            for call in result.tool_calls:
                outcome = await tools.call(call, tool_context)
                calls += 1
                TOOL_CALLS.labels(call.name, str(outcome.ok).lower()).inc()
                if on_tool is not None:
                    await on_tool(
                        call.name, call.arguments, outcome.text, outcome.ok, outcome.duration_ms
                    )
                history.append(ChatMessage(role="tool", content=outcome.text, tool_call_id=call.id))
        raise AssertionError("unreachable: the last round offers no tools")  # pragma: no cover

    async def summarize(self, client: LLMClient | None, messages: tuple[ChatMessage, ...]) -> str:
        if client is None:
            raise NoModelConfigured
        result = await client.complete(ChatRequest(messages=messages, stream=False))
        return result.text

    async def _call(
        self,
        client: LLMClient,
        setup: ModelSetup,
        request: ChatRequest,
        on_text: OnText | None,
        cacheable: bool,
        on_upstream: OnUpstream | None = None,
    ) -> tuple[ChatResult, bool]:
        async def upstream() -> ChatResult:
            if on_upstream is not None:
                await on_upstream()
            return await self._upstream(client, request, on_text)

        async def compute() -> bytes:
            return _encode(await upstream())

        if self._cache is None or not cacheable:
            return await upstream(), False
        key = fingerprint(setup.signature, request)
        # No deadline on the cache: our own call is bounded by the client's budget, and another
        # replica's call by its lock, which lapses within seconds if that replica dies.
        started = time.monotonic()
        try:
            raw, how = await self._cache.get_or_compute(key, compute)
        except TimeoutError as exc:  # never a bare timeout: the user must hear back
            error = LLMError("timeout", "waiting for an identical call", retryable=False)
            raise LLMGaveUp([error], attempts=0, elapsed_s=time.monotonic() - started) from exc
        return _decode_result(raw), how != "miss"

    @staticmethod
    async def _upstream(
        client: LLMClient, request: ChatRequest, on_text: OnText | None
    ) -> ChatResult:
        # The client meters (zhongshu_agent_inference_seconds) and traces every call itself.
        return await client.complete(request, on_text=on_text)
