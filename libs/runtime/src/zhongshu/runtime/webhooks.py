"""Platform webhooks served as bare ASGI, beside the side port's Starlette app.

A webhook is the hot path of ingress (P1 in docs/PERFORMANCE.md): one small POST, answered
after one publish. Starlette's two middlewares, router, ``Request`` and ``JSONResponse`` cost
about a quarter of the Python time such a request takes, and a webhook needs none of what they
add (its handler catches its own errors and answers with a few bytes). So the side port's app
matches the webhook paths first and gives their handlers the request's parts as they are;
everything else (health, readiness, metrics, the gateway's API) goes on to Starlette."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter

from zhongshu.runtime import telemetry
from zhongshu.runtime.clientaddr import client_address
from zhongshu.runtime.errors import ServiceStopped

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_encode = msgspec.json.Encoder().encode
_TRACER = telemetry.tracer()

ANSWERED = Counter(
    "zhongshu_webhook_requests_total",
    "Platform webhook requests answered, by path template and status (5xx: the platform "
    "retries; the ingress API's success rate)",
    ("route", "status"),
)


class WebhookRequest:
    """What a webhook handler reads: the path parameters, headers by lower-case name, the
    client's address and the body (streamed, so a handler can refuse an oversized one early)."""

    __slots__ = ("_headers", "_receive", "_scope", "path_params")

    def __init__(self, scope: Scope, receive: Receive, path_params: dict[str, str]) -> None:
        self._scope, self._receive, self.path_params = scope, receive, path_params
        self._headers: dict[bytes, bytes] | None = None

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (lower case), or None."""
        if self._headers is None:
            # reversed: a repeated header keeps its first value, as Starlette's get() did
            self._headers = dict(reversed(self._scope["headers"]))
        value = self._headers.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    @property
    def client(self) -> str:
        """The sender's address (``clientaddr``: the forwarded one behind a trusted proxy)."""
        client = self._scope.get("client")
        peer = str(client[0]) if client else ""
        return client_address(peer, self.header("x-forwarded-for"))

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None as soon as it exceeds ``limit`` bytes (the rest unread)."""
        message = await self._next()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            return body if len(body) <= limit else None  # the usual case: one piece
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await self._next()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks) if size <= limit else None

    async def _next(self) -> MutableMapping[str, Any]:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected before sending the whole body")
        return message


class WebhookResponse:
    """A status and a body; its headers are built once (answers are often constants)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes = JSON) -> None:
        self.status, self.body = status, body
        self.headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]

    @classmethod
    def json(cls, value: object, status: int = 200) -> WebhookResponse:
        return cls(status, _encode(value))


WebhookHandler = Callable[[WebhookRequest], Awaitable[WebhookResponse]]


@dataclass(frozen=True)
class Webhook:
    """``path`` is a template such as ``/webhooks/feishu/{app}/events``; a parameter matches
    one path segment."""

    path: str
    handler: WebhookHandler
    method: str = "POST"

    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + _PARAM.sub(r"(?P<\1>[^/]+)", self.path) + "$")

    @property
    def span_name(self) -> str:
        return f"{self.method} {self.path}"


def _server_attributes(scope: Scope, hook: Webhook) -> dict[str, str | int]:
    """HTTP semantic conventions for a webhook's span: the path, never the query (a platform
    may put a token there)."""
    attributes: dict[str, str | int] = {
        "http.request.method": hook.method,
        "http.route": hook.path,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    client = scope.get("client")
    if client:
        attributes["client.address"] = str(client[0])
    server = scope.get("server")
    if server:
        attributes["server.address"] = str(server[0])
        if server[1] is not None:
            attributes["server.port"] = int(server[1])
    return attributes


class WebhookFront:
    """The ASGI app in front: a request on a webhook path goes to its handler, any other to
    ``fallback``."""

    def __init__(self, webhooks: list[Webhook], fallback: ASGIApp) -> None:
        self._routes = [(hook.pattern(), hook) for hook in webhooks]
        self._fallback = fallback
        self._answered: dict[tuple[str, int], Counter] = {}  # bound, one per path and status

    def _count(self, hook: Webhook, status: int) -> None:
        counter = self._answered.get((hook.path, status))
        if counter is None:
            counter = self._answered[hook.path, status] = ANSWERED.labels(hook.path, str(status))
        counter.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            for pattern, hook in self._routes:
                match = pattern.match(path)
                if match is None:
                    continue
                if scope["method"] != hook.method:
                    response = WebhookResponse.json({"error": "method not allowed"}, 405)
                    await _respond(send, response, [(b"allow", hook.method.encode())])
                    return
                request = WebhookRequest(scope, receive, match.groupdict())
                # The trace of a conversation starts here: platforms send no traceparent.
                with _TRACER.start_as_current_span(
                    hook.span_name, kind=SpanKind.SERVER, attributes=_server_attributes(scope, hook)
                ) as span:
                    try:
                        response = await hook.handler(request)
                    except ServiceStopped:
                        # Starting or draining: the platform retries a 503 later, never a 500's
                        # "your request is broken".
                        response = WebhookResponse.json({"error": "service unavailable"}, 503)
                    except Exception:
                        self._count(hook, 500)  # uvicorn answers 500
                        raise
                    self._count(hook, response.status)
                    if span.is_recording():
                        span.set_attribute("http.response.status_code", response.status)
                        if response.status >= 500:
                            span.set_status(StatusCode.ERROR, f"HTTP {response.status}")
                    await _respond(send, response)
                return
        await self._fallback(scope, receive, send)


async def _respond(
    send: Send, response: WebhookResponse, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = response.headers + extra if extra else response.headers
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
