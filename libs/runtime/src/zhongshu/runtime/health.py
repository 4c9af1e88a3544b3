"""The side port every service opens: ``/healthz`` (alive), ``/readyz`` (its dependencies are
reachable) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zhongshu.runtime import procmetrics
from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.webhooks import ASGIApp, Webhook, WebhookFront

ReadinessCheck = Callable[[], Awaitable[bool]]
log = logging.getLogger("zhongshu.runtime.health")


def build_app(
    service: str,
    checks: dict[str, ReadinessCheck],
    routes: Sequence[BaseRoute] = (),
    webhooks: Sequence[Webhook] = (),
) -> ASGIApp:
    """The side port's app: health, readiness and metrics, plus any routes (the gateway's API)
    and platform webhooks the service serves itself, so one port per process carries all its
    HTTP. Webhooks are matched first, as bare ASGI (``runtime.webhooks``)."""
    procmetrics.register()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"service": service, "status": "ok"})

    async def readyz(_: Request) -> Response:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), 2.0))
            except Exception:
                results[name] = False
        ready = all(results.values())
        return JSONResponse(
            {"service": service, "ready": ready, "checks": results},
            status_code=200 if ready else 503,
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *routes,
        ]
    )
    return WebhookFront(list(webhooks), app) if webhooks else app


class HealthServer:
    """uvicorn in the service's own event loop, on a port chosen by settings (0 = any free)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when
        # the listening socket says TCP; with protocol 0 a response written in two parts waits
        # ~40 ms for the client's delayed ACK (Nagle).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise ConfigurationError(
                f"health port {host}:{port} is unusable ({exc.strerror}); "
                "set ZHONGSHU_HEALTH_PORT to a free port, or 0 for any"
            ) from exc
        self.host, self.port = host, self._sock.getsockname()[1]
        # httptools parses requests several times faster than h11 (webhooks are served here);
        # no proxy is in front of a service's own port, so no proxy-header rewriting either.
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="httptools",
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        self._sock.close()
