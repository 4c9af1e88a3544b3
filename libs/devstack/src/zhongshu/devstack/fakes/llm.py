"""A fake OpenAI-compatible LLM server for tests, benchmarks and the sandbox: deterministic
answers, streamed (SSE) or not, tool calls, embeddings, configurable latency, and failure
injection (429 with ``Retry-After``, 5xx for a while, stalls, broken-off answers, a wrong API
key). Every call is recorded with its arrival time, so a test can check what the upstream saw,
e.g. that no 1-second window held more than the QPS cap::

    async with FakeLLM(latency_s=0.2) as fake:
        # endpoint = fake.url  (http://127.0.0.1:N/v1)
        fake.fail_next(3, status=429, retry_after_s=1)
        ...
        assert fake.max_calls_in_window(1.0) <= 10

The answer is ``Answer: <last user message>``. A user message containing
``[[tool:NAME {"json": "args"}]]`` gets a call to tool NAME (when the request offers it) and,
once a tool result follows, ``Answer: <tool result>``. Tests may replace ``fake.answer``.

As a process (benchmarks run agent replicas against one of these)::

    python -m zhongshu.devstack.fakes.llm --port 8080 --latency-ms 200 [--api-key K]

prints ``READY fake-llm url=http://127.0.0.1:8080/v1`` once listening, and serves
``GET /_calls`` (arrivals, wall-clock) and ``POST /_control`` (latency, failures, reset) so
other processes can read and steer it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import math
import re
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from zhongshu.devstack.fakes.local_server import LocalServer

DEFAULT_MODEL = "fake-model"
STALL_MAX_S = 600.0
STALL_POLL_S = 0.05
KEEP_BODIES_STANDALONE = 1000  # a benchmark sends ~100k calls; their bodies are not needed
TOOL_DIRECTIVE = re.compile(r"\[\[tool:([A-Za-z0-9_.\-]+)\s*(.*?)\]\]", re.DOTALL)
_WORDS = re.compile(r"\s*\S+|\s+$")

ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class LLMCall:
    at: float
    """``time.monotonic()`` when the request arrived."""
    wall: float
    """``time.time()`` when the request arrived (what ``/_calls`` reports)."""
    kind: str
    """``chat`` or ``embeddings``."""
    body: dict[str, Any]
    outcome: str = "pending"
    """``ok``, ``tool_calls``, ``http_<status>``, ``stalled`` or ``cut``."""
    peer: str = ""
    """The client's ``host:port``: calls over one kept-alive connection share it."""
    stream: bool = False


@dataclass
class _Failure:
    status: int
    retry_after_s: float | None = None


def default_answer(body: dict[str, Any]) -> str:
    """``Answer: <tool result>`` after a tool result, else ``Answer: <last user message>``."""
    messages = _messages(body)
    results = [m for m in messages[_last_user(messages) + 1 :] if m.get("role") == "tool"]
    if results:
        return f"Answer: {_content(results[-1])}"
    users = [m for m in messages if m.get("role") == "user"]
    return f"Answer: {_content(users[-1]) if users else ''}"


def tool_call_for(body: dict[str, Any]) -> tuple[str, str] | None:
    """(name, arguments) when the last user message asks for an offered tool not yet answered."""
    messages = _messages(body)
    last_user = _last_user(messages)
    if last_user < 0 or any(m.get("role") == "tool" for m in messages[last_user + 1 :]):
        return None
    match = TOOL_DIRECTIVE.search(_content(messages[last_user]))
    offered = {
        tool.get("function", {}).get("name")
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
    }
    if match is None or match.group(1) not in offered:
        return None
    return match.group(1), match.group(2).strip() or "{}"


def tokens(chars: int) -> int:
    """About four characters a token, as the providers' rule of thumb has it."""
    return max(1, math.ceil(chars / 4))


def embedding(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    digest = b""
    counter = 0
    while len(digest) < dims * 4:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    raw = [v / 2**32 - 0.5 for v in struct.unpack(f"<{dims}I", digest[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


class FakeLLM(LocalServer):
    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        embedding_dims: int = 8,
        keep_bodies: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        routes = [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/_calls", self._calls_view, methods=["GET"]),
            Route("/_control", self._control, methods=["POST"]),
        ]
        super().__init__(Starlette(routes=routes), host, port)
        self.latency_s = latency_s
        """Wait before the first byte of every successful answer."""
        self.chunk_delay_s = chunk_delay_s
        """Wait between streamed chunks."""
        self.api_key = api_key
        """When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401)."""
        self.model = model
        self.embedding_dims = embedding_dims
        if keep_bodies is not None and keep_bodies < 1:
            raise ValueError("keep_bodies must be at least 1")
        self.keep_bodies = keep_bodies
        """When set, only the last ``keep_bodies`` calls keep their body (long benchmark runs)."""
        self.answer: Callable[[dict[str, Any]], str] = default_answer
        self.calls: list[LLMCall] = []
        self._failures: deque[_Failure] = deque()
        self._fail_until = 0.0
        self._fail_status = 500
        self._stalls: deque[int] = deque()
        self._cuts: deque[int] = deque()
        self._stall_epoch = 0
        self._ids = 0

    @property
    def url(self) -> str:
        """The OpenAI base URL to configure as a provider's endpoint."""
        return f"{self.base_url}/v1"

    async def serving(self) -> None:
        """Until the server stops (on SIGINT/SIGTERM when run as a process)."""
        if self._task is not None:
            await self._task

    # -- failure injection ---------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 429, retry_after_s: float | None = None) -> None:
        """The next ``n`` calls fail with ``status`` (and ``Retry-After`` when given)."""
        self._failures.extend(_Failure(status, retry_after_s) for _ in range(n))

    def fail_for(self, seconds: float, status: int = 500) -> None:
        """Every call fails with ``status`` for the next ``seconds``."""
        self._fail_until = time.monotonic() + seconds
        self._fail_status = status

    def stall_next(self, n: int = 1, after_chunks: int = 0) -> None:
        """The next ``n`` calls are accepted and never finish (until the client hangs up, the
        fake stops or ``reset()``); streamed ones send ``after_chunks`` chunks first."""
        self._stalls.extend([after_chunks] * n)

    def cut_next(self, n: int = 1, after_chunks: int = 1) -> None:
        """The next ``n`` chat calls answer 200 and then break off: streamed ones after
        ``after_chunks`` chunks, with no finish and no ``[DONE]``; others with half a JSON body."""
        self._cuts.extend([after_chunks] * n)

    def reset(self) -> None:
        """Forget the calls and every injected failure and release stalls (settings stay)."""
        self.calls.clear()
        self._failures.clear()
        self._stalls.clear()
        self._cuts.clear()
        self._fail_until = 0.0
        self._stall_epoch += 1

    # -- what was seen -------------------------------------------------------------------------

    def max_calls_in_window(self, window_s: float = 1.0, kind: str | None = None) -> int:
        """The most arrivals in any window of ``window_s`` (sliding, half-open)."""
        arrivals = sorted(c.at for c in self.calls if kind is None or c.kind == kind)
        most, start = 0, 0
        for end, at in enumerate(arrivals):
            while at - arrivals[start] >= window_s:
                start += 1
            most = max(most, end - start + 1)
        return most

    def outcomes(self) -> list[str]:
        return [call.outcome for call in self.calls]

    # -- routes --------------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        call, refusal = await self._admit(request, "chat")
        if refusal is not None:
            return refusal
        body, stream = call.body, call.stream  # (the record may drop its body later)
        if self._stalls:
            call.outcome = "stalled"
            after = self._stalls.popleft()
            if stream:
                return self._sse(self._stalled_stream(body, after))
            return await self._stall_plain(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self._cuts:
            call.outcome = "cut"
            after = self._cuts.popleft()
            if stream:
                return self._sse(self._cut_stream(body, after))
            return Response(
                b'{"id": "chatcmpl-cut", "choices": [{"ind', media_type="application/json"
            )
        tool = tool_call_for(body)
        answer = "" if tool else self.answer(body)
        call.outcome = "tool_calls" if tool else "ok"
        if stream:
            return self._sse(self._chunks(body, answer, tool))
        return JSONResponse(self._completion(body, answer, tool))

    async def _embeddings(self, request: Request) -> Response:
        call, refusal = await self._admit(request, "embeddings")
        if refusal is not None:
            return refusal
        body = call.body
        if self._stalls:
            self._stalls.popleft()
            call.outcome = "stalled"
            return await self._stall_plain(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs or []]
        call.outcome = "ok"
        used = sum(tokens(len(text)) for text in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding(t, self._dims(body))}
                    for i, t in enumerate(texts)
                ],
                "model": body.get("model", self.model),
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
        )

    async def _calls_view(self, request: Request) -> Response:
        since = int(request.query_params.get("since", "0"))
        return JSONResponse(
            {
                "count": len(self.calls),
                "calls": [
                    {"at": c.wall, "kind": c.kind, "outcome": c.outcome, "stream": c.stream}
                    for c in self.calls[since:]
                ],
            }
        )

    async def _control(self, request: Request) -> Response:
        """Steer a fake in another process: ``{"reset": true, "latency_ms": 200,
        "chunk_delay_ms": 10, "api_key": "k", "fail_next": {"n": 3, "status": 429,
        "retry_after_s": 1}, "fail_for": {"seconds": 40, "status": 500},
        "stall_next": {"n": 1, "after_chunks": 0}, "cut_next": {"n": 1, "after_chunks": 1}}``;
        every key is optional."""
        order = await request.json()
        if order.get("reset"):
            self.reset()
        if "latency_ms" in order:
            self.latency_s = float(order["latency_ms"]) / 1000
        if "chunk_delay_ms" in order:
            self.chunk_delay_s = float(order["chunk_delay_ms"]) / 1000
        if "api_key" in order:
            self.api_key = order["api_key"]
        if fail := order.get("fail_next"):
            self.fail_next(
                int(fail.get("n", 1)), int(fail.get("status", 429)), fail.get("retry_after_s")
            )
        if fail := order.get("fail_for"):
            self.fail_for(float(fail["seconds"]), int(fail.get("status", 500)))
        if stall := order.get("stall_next"):
            self.stall_next(int(stall.get("n", 1)), int(stall.get("after_chunks", 0)))
        if cut := order.get("cut_next"):
            self.cut_next(int(cut.get("n", 1)), int(cut.get("after_chunks", 1)))
        return JSONResponse(
            {
                "latency_ms": self.latency_s * 1000,
                "chunk_delay_ms": self.chunk_delay_s * 1000,
                "api_key_required": self.api_key is not None,
                "failures_queued": len(self._failures),
                "failing_for_s": max(0.0, self._fail_until - time.monotonic()),
                "stalls_queued": len(self._stalls),
                "cuts_queued": len(self._cuts),
            }
        )

    # -- the parts -----------------------------------------------------------------------------

    async def _admit(self, request: Request, kind: str) -> tuple[LLMCall, Response | None]:
        """Record the arrival, then check the key and the injected failures, in that order."""
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        call = LLMCall(at=time.monotonic(), wall=time.time(), kind=kind, body={}, peer=peer)
        self.calls.append(call)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self.api_key is not None and given != self.api_key:
            # Like the real thing, the message echoes the key it was given: clients must not
            # pass it on.
            return call, self._error(call, 401, f"Incorrect API key provided: {given}.")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return call, self._error(call, 400, "We could not parse the JSON body of your request.")
        call.body = body if isinstance(body, dict) else {}
        call.stream = bool(call.body.get("stream"))
        if self.keep_bodies is not None and len(self.calls) > self.keep_bodies:
            self.calls[-self.keep_bodies - 1].body = {}
        if time.monotonic() < self._fail_until:
            return call, self._error(call, self._fail_status, "The server had an error.")
        if self._failures:
            failure = self._failures.popleft()
            headers = {}
            if failure.retry_after_s is not None:
                headers["retry-after"] = f"{failure.retry_after_s:g}"
            return call, self._error(call, failure.status, "Injected failure.", headers)
        return call, None

    def _error(
        self, call: LLMCall, status: int, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        call.outcome = f"http_{status}"
        return _error_response(status, message, headers)

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def _usage(self, body: dict[str, Any], answer: str) -> dict[str, int]:
        prompt = tokens(sum(len(_content(m)) for m in _messages(body)))
        completion = tokens(len(answer))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _completion(
        self, body: dict[str, Any], answer: str, tool: tuple[str, str] | None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None if tool else answer}
        if tool:
            message["tool_calls"] = [
                {
                    "id": self._next_id("call"),
                    "type": "function",
                    "function": {"name": tool[0], "arguments": tool[1]},
                }
            ]
        return {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if tool else "stop",
                }
            ],
            "usage": self._usage(body, tool[1] if tool else answer),
        }

    def _chunk_payloads(
        self, body: dict[str, Any], answer: str, tool: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        """The ``choices`` of each chunk, last the finish, then (if asked) the usage alone."""
        if tool:
            name, arguments = tool
            half = len(arguments) // 2
            first = {
                "index": 0,
                "id": self._next_id("call"),
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            deltas: list[dict[str, Any]] = [{"role": "assistant", "tool_calls": [first]}]
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in (arguments[:half], arguments[half:])
                if piece
            ]
        else:
            words = _WORDS.findall(answer) or [""]
            deltas = [{"role": "assistant", "content": words[0]}]
            deltas += [{"content": word} for word in words[1:]]
        parts: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in deltas
        ]
        finish = "tool_calls" if tool else "stop"
        parts.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            parts.append({"choices": [], "usage": self._usage(body, tool[1] if tool else answer)})
        return parts

    def _content_payloads(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks of the text answer before its finish (what a broken stream gets out)."""
        parts = self._chunk_payloads(body, self.answer(body), None)
        return [p for p in parts if p["choices"] and p["choices"][0]["finish_reason"] is None]

    def _frame(self, body: dict[str, Any], chunk_id: str, part: dict[str, Any]) -> bytes:
        chunk = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            **part,
        }
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    async def _chunks(
        self, body: dict[str, Any], answer: str, tool: tuple[str, str] | None
    ) -> AsyncIterator[bytes]:
        chunk_id = self._next_id("chatcmpl")
        for n, part in enumerate(self._chunk_payloads(body, answer, tool)):
            if n and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield self._frame(body, chunk_id, part)
        yield b"data: [DONE]\n\n"

    async def _cut_stream(self, body: dict[str, Any], after_chunks: int) -> AsyncIterator[bytes]:
        chunk_id = self._next_id("chatcmpl")
        for part in self._content_payloads(body)[:after_chunks]:
            yield self._frame(body, chunk_id, part)

    async def _stalled_stream(
        self, body: dict[str, Any], after_chunks: int
    ) -> AsyncIterator[bytes]:
        chunk_id = self._next_id("chatcmpl")
        for part in self._content_payloads(body)[:after_chunks]:
            yield self._frame(body, chunk_id, part)
        # starlette cancels this generator when the client hangs up
        await self._stall_until_released(None)

    async def _stall_plain(self, request: Request) -> Response:
        await self._stall_until_released(request)
        return _error_response(504, "Released from a stall.")

    async def _stall_until_released(self, request: Request | None) -> None:
        # Polled: neither uvicorn's shutdown nor a client hanging up sets an event we could await.
        epoch, deadline = self._stall_epoch, time.monotonic() + STALL_MAX_S
        while True:
            if epoch != self._stall_epoch or self._server.should_exit:
                return
            if time.monotonic() >= deadline:
                return
            if request is not None and await request.is_disconnected():
                return
            await asyncio.sleep(STALL_POLL_S)

    def _sse(self, chunks: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(
            chunks,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    def _dims(self, body: dict[str, Any]) -> int:
        asked = body.get("dimensions")
        return asked if isinstance(asked, int) and asked > 0 else self.embedding_dims


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the OpenAI shape: ``{"error": {"message", "type", "code"}}``."""
    kind, code = ERROR_TYPES.get(status, ("server_error", "server_error"))
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": code}},
        status_code=status,
        headers=headers,
    )


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages") or [] if isinstance(m, dict)]


def _last_user(messages: list[dict[str, Any]]) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeLLM(
        latency_s=args.latency_ms / 1000,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        api_key=args.api_key,
        model=args.model,
        keep_bodies=KEEP_BODIES_STANDALONE,
        host=args.host,
        port=args.port,
    )
    await fake.start()
    print(f"READY fake-llm url={fake.url}", flush=True)
    await fake.serving()


def main(argv: list[str] | None = None) -> None:
    """Takes llama.cpp's server arguments too (``--model PATH --model_alias NAME --host --port``,
    others ignored), so ``zhongshu up --local-model`` can run it in the server's place."""
    parser = argparse.ArgumentParser(
        prog="python -m zhongshu.devstack.fakes.llm", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model id it answers as")
    parser.add_argument("--model_alias", default=None, help="overrides --model (llama.cpp's)")
    args, _ = parser.parse_known_args(argv)
    if args.model_alias:
        args.model = args.model_alias
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop  # benchmarks drive this hard: use the faster loop when it is there

        uvloop.run(_serve(args))
    else:
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
