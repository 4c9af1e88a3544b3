"""The single HTTP origin of ``zhongshu up`` (port 8000 by default, ``ZHONGSHU_HTTP_PORT``):
routes the public paths of DESIGN.md's "Public interfaces" to the service that owns them, as
the Kubernetes Ingress or the compose nginx does in production."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zhongshu.cli.console import CliError

DEFAULT_PORT = 8000
# Path prefix -> owning service (longest prefix wins). Stable names: platforms and operators
# are configured with these URLs.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/webhooks/feishu/", "ingress-feishu"),
    ("/webhooks/dingtalk/", "ingress-dingtalk"),
    ("/api/", "gateway"),
    ("/openapi.json", "gateway"),
    ("/docs", "gateway"),
    ("/", "gateway"),
)
# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
MAX_BODY_BYTES = 1024 * 1024 + 1  # one byte over the services' limit, so they answer 413


def owner(path: str) -> str | None:
    """The service that owns ``path``, by the longest matching prefix."""
    matches = [(prefix, name) for prefix, name in ROUTES if path.startswith(prefix)]
    return max(matches, key=lambda m: len(m[0]))[1] if matches else None


def build_app(upstreams: Callable[[], Mapping[str, int]]) -> Starlette:
    """``upstreams()`` gives each supervised service's HTTP port (its side port)."""
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0))

    async def proxy(request: Request) -> Response:
        name = owner(request.url.path)
        port = upstreams().get(name) if name else None
        if name is None or port is None:
            return JSONResponse(
                {"detail": f"no service here serves {request.url.path}", "owner": name},
                status_code=404,
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                break
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if request.client is not None:
            headers["x-forwarded-for"] = request.client.host
        url = f"http://127.0.0.1:{port}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        try:
            upstream = await client.request(request.method, url, content=body, headers=headers)
        except httpx.TransportError:
            # Down or restarting: 503 makes the platforms retry later.
            return JSONResponse({"detail": f"{name} is not reachable"}, status_code=503)
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        out.pop("content-encoding", None)  # httpx has already decoded the body
        return Response(upstream.content, status_code=upstream.status_code, headers=out)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "services": sorted(upstreams())})

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )


def bind(port: int, host: str = "127.0.0.1") -> socket.socket:
    """Bind the front door's port now, so a port in use is a clear error before anything runs."""
    # IPPROTO_TCP: so asyncio turns Nagle off on accepted connections (see runtime.health).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"HTTP port {host}:{port} is unusable ({exc.strerror}); "
            "set ZHONGSHU_HTTP_PORT to a free port"
        ) from None
    return sock


async def serve(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)
    sock.close()
