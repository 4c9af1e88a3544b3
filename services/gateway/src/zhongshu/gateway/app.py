"""The FastAPI application: its routers, the problem handlers, and the outer middleware that
adds `RateLimit-*` headers to every answer and turns any unexpected error into a 500 problem
(never a stack trace)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhongshu.gateway import metrics, openapi, problems, quotas
from zhongshu.gateway.adapters import Unavailable
from zhongshu.gateway.context import Gateway
from zhongshu.gateway.routes import (
    audit,
    console,
    grants,
    schedules,
    subscriptions,
    tasks,
    triggers,
    workflows,
)
from zhongshu.gateway.routes import quotas as quota_routes

log = logging.getLogger("zhongshu.gateway")

VERSION = "1.0.0"


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return problems.problem_response(
        request, 503, str(exc), kind="unavailable", headers={"Retry-After": "5"}
    )


class Edge:
    """Outermost: rate-limit headers on every answer, and a 500 problem for anything that
    escaped the handlers (its text stays in the log: it may hold a query or a secret)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in quotas.headers_for(scope.get("state") or {}).items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = problems.problem_response(
                StarletteRequest(scope), 500, "an unexpected error; the gateway's log has it"
            )
            await response(scope, receive, send)
        finally:
            # The route's template, not the path: ids would make a label per task.
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            metrics.REQUESTS.labels(method, route, str(status)).inc()
            metrics.LATENCY.labels(method, route).observe(time.perf_counter() - began)


def build_app(deps: Callable[[], Gateway]) -> FastAPI:
    """``deps``: the service's, what its lifespan yielded (raises RuntimeFailure before)."""
    app = FastAPI(
        title="zhongshu API",
        version=VERSION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        separate_input_output_schemas=False,
        # Operation ids are the handlers' names (`create_task`): what generated clients call.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.deps = deps  # read by context.gateway, the routes' dependency
    problems.install(app)
    app.add_exception_handler(Unavailable, _on_unavailable)
    for module in (tasks, schedules, triggers, workflows, subscriptions, quota_routes, console):
        app.include_router(module.router)
    app.include_router(audit.router)
    app.include_router(subscriptions.task_callbacks)
    app.include_router(grants.router)
    app.include_router(grants.tokens)
    app.add_middleware(Edge)

    def custom_openapi() -> dict[str, object]:
        return openapi.document(app)

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app
