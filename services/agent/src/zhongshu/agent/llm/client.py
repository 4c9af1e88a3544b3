"""The agent's LLM client: one logical chat call made reliable across OpenAI-compatible
providers, within one time budget.

Providers are tried in priority order. A retryable failure (429, 5xx, timeout, connection,
malformed answer) moves on to the next provider at once; when every provider failed in a round,
the client backs off (full jitter, at least as long as the providers' ``Retry-After`` asks) and
starts again from the first. A refusal that retrying cannot fix (400, 401, 403, 404, 422) takes
that provider out of the call. Each attempt passes through the ``gate`` (the agent's cluster-wide
QPS slot and per-replica concurrency), which is not held while backing off. Time spent waiting at
the gate is not counted against ``timeout_s`` unless ``budget_includes_gate``: the budget bounds
the upstream's time, the gate's wait is metered apart (``AttemptRecord.gate_wait_s``).

When the budget is spent, a provider's hint reaches past it, or every provider refused, the call
raises ``LLMGaveUp`` with the last error's code (``timeout``, ``http_500``…)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import random as _random
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

import httpx
import msgspec
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from zhongshu.agent.llm.attempt import HttpAttempt
from zhongshu.agent.llm.errors import LLMError, LLMGaveUp
from zhongshu.agent.llm.retry import backoff_s
from zhongshu.agent.llm.types import AttemptRecord, ChatRequest, ChatResult, Provider
from zhongshu.agent.llm.wire import encode_request
from zhongshu.agent.metrics import INFERENCE_SECONDS, TOKENS
from zhongshu.runtime import conditions

log = logging.getLogger("zhongshu.agent.llm")
_TRACER = trace.get_tracer("zhongshu.agent")


def _host(endpoint: str) -> str:
    """The provider's host for ``server.address`` (never the URL: it may carry a key)."""
    return urllib.parse.urlsplit(endpoint).hostname or ""


def _fail_fast_without_sniffio() -> None:
    """httpcore imports ``sniffio`` on every request to learn which async library runs it; anyio
    no longer installs it, and each failed import rescans ``sys.path`` (about 0.6 ms, four times
    a call: most of the client's CPU). Marked absent once, the import fails at once and httpcore
    assumes asyncio, which is right. Adding ``sniffio`` to the dependencies makes this moot."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_fail_fast_without_sniffio()

__all__ = ["AttemptRecord", "Gate", "LLMClient", "OnAttempt", "OnText"]

Gate = Callable[[], contextlib.AbstractAsyncContextManager[object]]
OnText = Callable[[str], Awaitable[None]]
OnAttempt = Callable[[AttemptRecord], None]

# A replica runs a handful of calls at once (MAX_CONCURRENT); the pool leaves room for more and
# keeps connections open between calls, so a call rarely pays for a TCP or TLS handshake.
POOL_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=60)
MAX_MIN_ATTEMPT_S = 1.0
READY_SLACK_S = 0.001  # a provider whose Retry-After ends within this is ready


class LLMClient:
    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        timeout_s: float = 30.0,
        gate: Gate | None = None,
        http: httpx.AsyncClient | None = None,
        random: Callable[[], float] = _random.random,
        on_attempt: OnAttempt | None = None,
        min_attempt_s: float | None = None,
        budget_includes_gate: bool = False,
    ) -> None:
        """``min_attempt_s``: an attempt is not started with less time left than this (default
        a tenth of the budget, at most 1 s): it could not finish, and the call would report a
        timeout instead of the error that actually stopped it."""
        if not providers:
            raise ValueError("LLMClient needs at least one provider")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.providers = tuple(providers)
        self.timeout_s = timeout_s
        self._gate = gate
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(limits=POOL_LIMITS, timeout=timeout_s)
        self.random = random
        self._on_attempt = on_attempt
        self.min_attempt_s = (
            min(MAX_MIN_ATTEMPT_S, timeout_s / 10) if min_attempt_s is None else min_attempt_s
        )
        self._budget_includes_gate = budget_includes_gate

    async def complete(self, request: ChatRequest, *, on_text: OnText | None = None) -> ChatResult:
        """The answer, or LLMGaveUp. ``on_text`` is awaited with the whole text so far after each
        streamed content delta; after a failed attempt the next one starts again from empty.

        Every call is one ``chat <model>`` span (OpenTelemetry GenAI conventions: the model,
        provider, token usage and finish reason; never the prompt or the answer) and one
        observation of ``zhongshu_agent_inference_seconds``."""
        first = self.providers[0]
        attributes: dict[str, str | float | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": first.name,
            "gen_ai.provider.name": first.name,
            "gen_ai.request.model": first.model,
            "server.address": _host(first.endpoint),
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        started = time.perf_counter()
        outcome, provider = "error", "none"
        try:
            with _TRACER.start_as_current_span(
                f"chat {first.model}", kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                try:
                    result = await _Call(self, request, on_text).run()
                except LLMGaveUp as exc:
                    if span.is_recording():
                        span.set_attribute("error.type", exc.code)
                        span.set_attribute("zhongshu.llm.attempts", exc.attempts)
                    raise
                outcome, provider = "ok", result.provider
                TOKENS.labels(provider, "in").inc(result.usage.prompt_tokens)
                TOKENS.labels(provider, "out").inc(result.usage.completion_tokens)
                if span.is_recording():
                    span.set_attributes(
                        {
                            "gen_ai.provider.name": result.provider,
                            "gen_ai.response.model": result.model,
                            "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
                            "gen_ai.usage.output_tokens": result.usage.completion_tokens,
                            "gen_ai.response.finish_reasons": (result.finish_reason,),
                            "zhongshu.llm.attempts": result.attempts,
                        }
                    )
                return result
        finally:
            INFERENCE_SECONDS.labels(provider, outcome).observe(time.perf_counter() - started)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _attempt(self, call: _Call, index: int, waited_s: float) -> ChatResult:
        """One attempt on provider ``index``, inside the gate; raises LLMError."""
        loop = asyncio.get_running_loop()
        # Encoded before the gate: the way from the QPS fence to the provider is what the gate's
        # margin must cover, so nothing that can be done earlier is done on it.
        call.body_for(index)
        asked = loop.time()
        async with contextlib.AsyncExitStack() as held:
            if self._gate is not None:
                await self._enter_gate(held, call, self.providers[index])
            gate_wait_s = loop.time() - asked
            if not self._budget_includes_gate:
                call.deadline += gate_wait_s
            call.attempts += 1
            result = await self._exchange(call, index, waited_s, gate_wait_s)
        return result

    async def _exchange(
        self, call: _Call, index: int, waited_s: float, gate_wait_s: float
    ) -> ChatResult:
        loop = asyncio.get_running_loop()
        provider = self.providers[index]
        admitted = loop.time()
        attempt = HttpAttempt(
            self._http,
            provider,
            call.body_for(index),
            stream=call.request.stream,
            on_text=call.on_text,
        )
        code: str | None = "aborted"  # stays so when on_text raised or the call was cancelled
        hint: float | None = None
        try:
            result = await attempt.run(call.deadline - admitted)
        except LLMError as error:
            code, hint = error.code, error.retry_after_s
            raise
        else:
            code = None
            return result
        finally:
            self._record(
                AttemptRecord(
                    provider=provider.name,
                    model=provider.model,
                    attempt=call.attempts,
                    code=code,
                    status=attempt.status,
                    duration_s=loop.time() - admitted,
                    gate_wait_s=gate_wait_s,
                    waited_s=waited_s,
                    retry_after_s=hint,
                    first_chunk_s=attempt.first_chunk_s,
                )
            )

    async def _enter_gate(
        self, held: contextlib.AsyncExitStack, call: _Call, provider: Provider
    ) -> None:
        assert self._gate is not None
        if not self._budget_includes_gate:
            await held.enter_async_context(self._gate())
            return
        try:
            async with asyncio.timeout_at(call.deadline):
                await held.enter_async_context(self._gate())
        except TimeoutError:
            raise LLMError(
                "timeout",
                "the budget ran out waiting for a call slot",
                retryable=True,
                provider=provider.name,
            ) from None

    def _record(self, record: AttemptRecord) -> None:
        if record.code not in (None, "aborted"):
            log.info(
                "LLM attempt %d on %s failed: %s", record.attempt, record.provider, record.code
            )
        if self._on_attempt is None:
            return
        try:
            self._on_attempt(record)
        except Exception:  # metering must never fail a call
            log.exception("on_attempt callback failed")


class _Call:
    """The state of one ``complete()``: the deadline, which providers are out or asked us to
    wait, the errors so far."""

    def __init__(self, client: LLMClient, request: ChatRequest, on_text: OnText | None) -> None:
        self.client, self.request, self.on_text = client, request, on_text
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.deadline = self.started + client.timeout_s
        self.attempts = 0
        self.errors: list[LLMError] = []
        self._bodies: dict[int, bytes] = {}
        count = len(client.providers)
        self._refused = [False] * count
        self._not_before = [0.0] * count

    def body_for(self, index: int) -> bytes:
        if index not in self._bodies:  # encoded once per provider (the model name differs)
            self._bodies[index] = encode_request(self.request, self.client.providers[index].model)
        return self._bodies[index]

    async def run(self) -> ChatResult:
        round_no, waited = 0, 0.0
        while True:
            for index, provider in enumerate(self.client.providers):
                if self._refused[index] or self._not_before[index] > self._now() + READY_SLACK_S:
                    continue
                if self.errors and self._left() < self.client.min_attempt_s:
                    raise self._gave_up()
                try:
                    result = await self.client._attempt(self, index, waited)
                except LLMError as error:
                    self._failed(index, error)
                    waited = 0.0
                    continue
                conditions.set("llm", ok=True)  # for the watchdog (heartbeat conditions)
                return msgspec.structs.replace(
                    result, provider=provider.name, model=provider.model, attempts=self.attempts
                )
            live = [i for i, refused in enumerate(self._refused) if not refused]
            if not live:
                raise self._gave_up()
            # The providers' hints must be honoured, the jitter need not: rather than give up
            # over a long random draw, it is cut so that one more attempt fits in the budget.
            required = max(0.0, min(self._not_before[i] for i in live) - self._now())
            room = self._left() - self.client.min_attempt_s
            if required > room:
                raise self._gave_up()  # never sleep past the budget
            waited = min(max(backoff_s(round_no, self.client.random), required), room)
            await asyncio.sleep(waited)
            round_no += 1

    def _failed(self, index: int, error: LLMError) -> None:
        self.errors.append(error)
        if not error.retryable:
            self._refused[index] = True
        elif error.retry_after_s:
            self._not_before[index] = self._now() + error.retry_after_s

    def _gave_up(self) -> LLMGaveUp:
        elapsed = self._now() - self.started
        gave_up = LLMGaveUp(self.errors, attempts=self.attempts, elapsed_s=elapsed)
        conditions.set("llm", ok=False, detail=f"{gave_up.code} after {self.attempts} attempt(s)")
        return gave_up

    def _now(self) -> float:
        return self.loop.time()

    def _left(self) -> float:
        return self.deadline - self._now()
