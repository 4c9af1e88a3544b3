"""The front door routes public paths to the owning service, as the production ingress does."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zhongshu.cli import frontdoor
from zhongshu.devstack import free_port


def test_each_public_path_has_its_owner() -> None:
    assert frontdoor.owner("/webhooks/feishu/acme/events") == "ingress-feishu"
    assert frontdoor.owner("/webhooks/dingtalk/acme") == "ingress-dingtalk"
    assert frontdoor.owner("/api/v1/tasks") == "gateway"
    assert frontdoor.owner("/") == "gateway"


async def echo_upstream(request: Request) -> Response:
    return JSONResponse(
        {
            "path": request.url.path,
            "query": request.url.query,
            "body": (await request.body()).decode(),
            "signature": request.headers.get("x-lark-signature"),
            "forwarded_for": request.headers.get("x-forwarded-for"),
        },
        status_code=202,
    )


async def test_a_webhook_reaches_its_service_with_body_headers_and_query_intact() -> None:
    upstream_port, front_port = free_port(), free_port()
    upstream = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/{p:path}", echo_upstream, methods=["POST"])]),
            host="127.0.0.1",
            port=upstream_port,
            log_config=None,
        )
    )
    upstream_task = asyncio.create_task(upstream.serve())
    stop = asyncio.Event()
    ports = {"ingress-feishu": upstream_port, "ingress-dingtalk": free_port()}
    front = asyncio.create_task(
        frontdoor.serve(frontdoor.build_app(lambda: ports), frontdoor.bind(front_port), stop)
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front_port}") as client:
            for _ in range(50):
                if upstream.started:
                    break
                await asyncio.sleep(0.05)
            forwarded = await client.post(
                "/webhooks/feishu/acme/events?x=1",
                content=b'{"encrypt":"abc"}',
                headers={"X-Lark-Signature": "52548f4f"},
            )
            assert forwarded.status_code == 202
            assert forwarded.json() == {
                "path": "/webhooks/feishu/acme/events",
                "query": "x=1",
                "body": '{"encrypt":"abc"}',
                "signature": "52548f4f",
                "forwarded_for": "127.0.0.1",
            }
            # Installed but not answering (restarting): 503, so the platform retries.
            down = await client.post("/webhooks/dingtalk/acme", content=b"{}")
            assert down.status_code == 503
            # Nobody here serves the API yet.
            assert (await client.get("/api/v1/tasks")).status_code == 404
    finally:
        stop.set()
        await front
        upstream.should_exit = True
        await upstream_task
