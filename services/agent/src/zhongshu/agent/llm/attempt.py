"""One HTTP exchange with one provider, bounded by the time left: send the request, stream or
read the answer, and turn every way it can fail into an ``LLMError`` with a code."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import httpx
import msgspec

from zhongshu.agent.llm.errors import LLMError, status_is_retryable
from zhongshu.agent.llm.retry import retry_hint_s
from zhongshu.agent.llm.sse import sse_data
from zhongshu.agent.llm.types import ChatResult, Provider
from zhongshu.agent.llm.wire import StreamState, WireError, decode_completion, error_text

OnText = Callable[[str], Awaitable[None]]

ERROR_BODY_LIMIT = 8192  # enough for any error JSON; an HTML error page is cut
ERROR_DETAIL_CHARS = 200
DRAIN_S = 0.5  # after [DONE], how long to wait for the body's end so the connection is reused


class HttpAttempt:
    """``status`` and ``first_chunk_s`` are kept on the object so a failed attempt can still be
    recorded with them."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        provider: Provider,
        body: bytes,
        *,
        stream: bool,
        on_text: OnText | None,
    ) -> None:
        self._http, self._provider, self._body = http, provider, body
        self._stream, self._on_text = stream, on_text
        self.status: int | None = None
        self.first_chunk_s: float | None = None
        self._started = 0.0

    async def run(self, timeout_s: float) -> ChatResult:
        """The answer, or LLMError; errors raised by ``on_text`` pass through untouched."""
        self._started = time.perf_counter()
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                return await self._exchange(timeout_s)
        except TimeoutError:
            raise self._error("timeout", f"no whole answer within {timeout_s:.2f}s") from None
        except httpx.TimeoutException as exc:
            code = "connect" if isinstance(exc, httpx.ConnectTimeout) else "timeout"
            raise self._error(code, type(exc).__name__) from None
        except httpx.ConnectError as exc:
            raise self._error("connect", type(exc).__name__) from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise self._error("bad_endpoint", type(exc).__name__, retryable=False) from None
        except httpx.TransportError as exc:  # read/write errors, the connection dropped mid-way
            raise self._error("network", type(exc).__name__) from None
        except WireError as exc:
            raise self._error(exc.code, self._redact(exc.message)) from None

    async def _exchange(self, timeout_s: float) -> ChatResult:
        headers = {"content-type": "application/json"}
        if self._stream:
            headers["accept"] = "text/event-stream"
        if self._provider.api_key:
            headers["authorization"] = f"Bearer {self._provider.api_key}"
        async with self._http.stream(
            "POST",
            self._provider.endpoint.rstrip("/") + "/chat/completions",
            content=self._body,
            headers=headers,
            timeout=httpx.Timeout(max(timeout_s, 0.001)),
        ) as response:
            self.status = response.status_code
            if not 200 <= response.status_code < 300:
                raise await self._http_error(response)
            content_type = response.headers.get("content-type", "")
            # Some servers ignore ``stream`` one way or the other: go by what came back.
            if "event-stream" in content_type or (self._stream and "json" not in content_type):
                return await self._read_stream(response)
            result = decode_completion(await response.aread())
            if self._on_text is not None and result.text:
                await self._on_text(result.text)
            return result

    async def _read_stream(self, response: httpx.Response) -> ChatResult:
        state = StreamState()
        async with contextlib.aclosing(sse_data(response.aiter_lines())) as events:
            async for data in events:
                if self.first_chunk_s is None:
                    self.first_chunk_s = time.perf_counter() - self._started
                if state.add(data) and self._on_text is not None:
                    await self._on_text(state.text)
                if state.done:
                    break
            result = state.result()
            if state.done:  # read the body's end so the connection goes back to the pool
                with contextlib.suppress(TimeoutError, httpx.TransportError):
                    async with asyncio.timeout(DRAIN_S):
                        async for _ in events:
                            pass
        return result

    async def _http_error(self, response: httpx.Response) -> LLMError:
        raw = bytearray()
        with contextlib.suppress(httpx.TransportError):
            async for piece in response.aiter_bytes():
                raw += piece
                if len(raw) >= ERROR_BODY_LIMIT:
                    break
        detail = ""
        with contextlib.suppress(msgspec.DecodeError):
            detail = error_text(msgspec.json.decode(raw))
        if not detail:
            detail = raw[:ERROR_DETAIL_CHARS].decode(errors="replace").strip()
        status = response.status_code
        message = f"HTTP {status}" + (f": {detail[:ERROR_DETAIL_CHARS]}" if detail else "")
        return self._error(
            f"http_{status}",
            self._redact(message),
            retryable=status_is_retryable(status),
            retry_after_s=retry_hint_s(response.headers),
        )

    def _error(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
    ) -> LLMError:
        return LLMError(
            code,
            message,
            retryable=retryable,
            provider=self._provider.name,
            status=self.status,
            retry_after_s=retry_after_s,
        )

    def _redact(self, text: str) -> str:
        """Providers echo the key they were given in 401 messages; it must not travel further."""
        key = self._provider.api_key
        return text.replace(key, "***") if key else text
