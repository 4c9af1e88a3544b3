"""The edge (Caddy, as ``zhongshu up`` configures it) routes public paths to the owning service
with the body byte for byte, answers for a service that is down and recovers when it is back,
cuts oversized bodies, serves its own /healthz, follows a moved port without a restart, and on
the public side speaks TLS 1.3 only, with HSTS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zhongshu.cli import edge
from zhongshu.devstack import free_port
from zhongshu.devstack.testing import eventually, localhost_certificate


def test_each_public_path_has_its_owner() -> None:
    assert edge.owner("/webhooks/feishu/acme/events") == "ingress-feishu"
    assert edge.owner("/webhooks/dingtalk/acme") == "ingress-dingtalk"
    assert edge.owner("/api/v1/tasks") == "gateway"
    assert edge.owner("/") == "gateway"


def test_the_public_side_is_tls_13_only_with_hsts_and_the_given_certificate(
    tmp_path: Path,
) -> None:
    public = edge.Public(host="hub.example.com", tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    config = edge.render(edge.EdgeConfig(8000, {}, tmp_path, public))
    server = config["apps"]["http"]["servers"]["public"]
    assert server["listen"] == [":443"]
    assert server["tls_connection_policies"] == [{"protocol_min": "tls1.3"}]
    assert server["automatic_https"] == {"skip_certificates": ["hub.example.com"]}
    [route] = server["routes"]
    assert route["match"] == [{"host": ["hub.example.com"]}]
    assert route["handle"][0]["response"]["set"]["Strict-Transport-Security"] == [edge.HSTS]
    assert config["apps"]["tls"]["certificates"]["load_files"][0]["certificate"].endswith("c")
    local = config["apps"]["http"]["servers"]["local"]
    assert local["listen"] == ["127.0.0.1:8000"]  # the local origin stays plain HTTP


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


@contextlib.asynccontextmanager
async def upstream_on(port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/{p:path}", echo_upstream, methods=["GET", "POST"])]),
            host="127.0.0.1",
            port=port,
            log_config=None,
        )
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "the upstream listens")
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    return localhost_certificate(tmp_path)


@contextlib.contextmanager
def caddy(config: edge.EdgeConfig) -> Iterator[subprocess.Popen[bytes]]:
    edge.write(config)
    proc = subprocess.Popen(edge.argv(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def edge_up(port: int) -> None:
    async def answers() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(answers, "the edge answers /healthz")


async def test_a_webhook_reaches_its_service_byte_for_byte_and_a_down_one_recovers(
    tmp_path: Path,
) -> None:
    feishu, dingtalk, local = free_port(), free_port(), free_port()
    ports = {"ingress-feishu": feishu, "ingress-dingtalk": dingtalk}
    config = edge.EdgeConfig(local_port=local, upstreams=ports, data_dir=tmp_path / "data")
    with caddy(config):
        await edge_up(local)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{local}") as client:
            health = await client.get("/healthz")
            assert health.json() == {"status": "ok", "services": sorted(ports)}
            async with upstream_on(feishu):
                body = b'{"encrypt":"abc==" ,  "x": "\\u4e2d"}'  # spacing kept: it is signed
                forwarded = await client.post(
                    "/webhooks/feishu/acme/events?x=1",
                    content=body,
                    headers={"X-Lark-Signature": "52548f4f"},
                )
                assert forwarded.status_code == 202
                assert forwarded.json() == {
                    "path": "/webhooks/feishu/acme/events",
                    "query": "x=1",
                    "body": body.decode(),
                    "signature": "52548f4f",
                    "forwarded_for": "127.0.0.1",
                }
                too_big = await client.post(
                    "/webhooks/feishu/acme/events", content=b"x" * (2 * 1024 * 1024)
                )
                assert too_big.status_code == 413
            # Installed but not answering (crashed, restarting): 502, so the platform retries.
            down = await client.post("/webhooks/dingtalk/acme", content=b"{}")
            assert down.status_code == 502
            async with upstream_on(dingtalk):  # back, and the edge was never restarted
                assert (
                    await client.post("/webhooks/dingtalk/acme", content=b"{}")
                ).status_code == 202
            # Nobody here serves the API (no gateway running): 404 naming the owner.
            missing = await client.get("/api/v1/tasks")
            assert missing.status_code == 404
            assert missing.json()["owner"] == "gateway"
            # The side port's operator pages are not public, whoever would serve them.
            for internal in ("/metrics", "/readyz"):
                hidden = await client.get(internal)
                assert hidden.status_code == 404
                assert "own port" in hidden.json()["detail"]


async def test_a_moved_port_is_followed_without_restarting_the_edge(tmp_path: Path) -> None:
    old, new, local = free_port(), free_port(), free_port()
    ports = {"ingress-feishu": old}
    config = edge.EdgeConfig(local_port=local, upstreams=ports, data_dir=tmp_path / "data")
    with caddy(config) as proc:
        await edge_up(local)
        ports["ingress-feishu"] = new
        await edge.reload(config)
        async with upstream_on(new), httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{local}/webhooks/feishu/a/events")
            assert answer.status_code == 202
        assert proc.poll() is None


def _handshake(port: int, ca_file: Path, version: ssl.TLSVersion) -> str:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return f"{tls.version()}\n{answer.decode()}"


async def test_a_tls_13_client_gets_through_and_a_tls_12_client_is_refused(
    tmp_path: Path, certificates: tuple[Path, Path, Path]
) -> None:
    cert, key, ca_file = certificates
    local, https, redirect = free_port(), free_port(), free_port()
    public = edge.Public(
        host="localhost",
        bind="127.0.0.1",
        https_port=https,
        redirect_port=redirect,
        tls_cert=cert,
        tls_key=key,
    )
    config = edge.EdgeConfig(local, {}, tmp_path / "data", public)
    with caddy(config):
        await edge_up(local)

        async def https_up() -> str | None:
            try:
                return await asyncio.to_thread(_handshake, https, ca_file, ssl.TLSVersion.TLSv1_3)
            except OSError:
                return None

        answer = await eventually(https_up, "the public side answers")
        version, _, http = answer.partition("\n")
        assert version == "TLSv1.3"
        assert "200 OK" in http
        assert f"strict-transport-security: {edge.HSTS}".lower() in http.lower()
        body = json.loads(http.split("\r\n\r\n", 1)[1])
        assert body["status"] == "ok"
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(_handshake, https, ca_file, ssl.TLSVersion.TLSv1_2)
        async with httpx.AsyncClient() as client:
            plain = await client.get(
                f"http://127.0.0.1:{redirect}/x", headers={"Host": "localhost"}
            )
        assert plain.status_code in (301, 302, 308)
        assert plain.headers["location"].startswith("https://localhost")


async def test_access_logs_go_to_a_file_as_json_lines_with_ecs_keys(tmp_path: Path) -> None:
    local = free_port()
    config = edge.EdgeConfig(local_port=local, upstreams={}, data_dir=tmp_path / "data")
    with caddy(config):
        await edge_up(local)
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{local}/api/v1/tasks")

        def logged() -> list[dict[str, object]]:
            if not config.access_log.exists():
                return []
            lines = config.access_log.read_text().splitlines()
            return [json.loads(x) for x in lines if "/api/v1/tasks" in x]

        [line] = await eventually(logged, "the request is in the access log")
    assert {"@timestamp", "log.level", "message"} <= set(line)
    assert line["status"] == 404
