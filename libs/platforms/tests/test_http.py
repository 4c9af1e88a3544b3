"""The services' HTTP client (httpx over aiohttp) keeps httpx's answers and tells a request
that never left from one the server may have acted on: a platform without idempotency keys
(DingTalk) must not be asked again after the second kind. Against real local sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from zhongshu.platforms.calls import exchange
from zhongshu.platforms.http import client
from zhongshu.platforms.results import Ambiguous, Unreachable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


async def serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/open-apis/im/v1/messages"


@pytest.fixture
async def answering() -> AsyncIterator[str]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        answer = b'{"code":0,"echo":' + body + b"}"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r-1\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    async for url in serve(handler):
        yield url


@pytest.fixture
async def hanging_up() -> AsyncIterator[str]:
    """Reads the whole request, then closes the connection without a word."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async for url in serve(handler):
        yield url


@pytest.fixture
async def stalling() -> AsyncIterator[str]:
    """Reads the request and never answers."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(3600)

    async for url in serve(handler):
        yield url


async def test_an_answer_reads_as_httpx_would(answering: str) -> None:
    async with client(timeout=5) as http:
        answer = await exchange(http, "POST", answering, json={"text": "hi"})
    assert isinstance(answer, httpx.Response)
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "r-1"
    assert answer.json() == {"code": 0, "echo": {"text": "hi"}}


async def test_nothing_listening_is_unreachable() -> None:
    async with client(timeout=5) as http:
        answer = await exchange(http, "POST", f"http://127.0.0.1:{closed_port()}/x", json={})
    assert isinstance(answer, Unreachable)


async def test_a_server_hanging_up_after_the_request_is_ambiguous(hanging_up: str) -> None:
    # httpx-aiohttp names this ConnectTimeout; the request was sent all the same.
    async with client(timeout=5) as http:
        answer = await exchange(http, "POST", hanging_up, json={"text": "hi"})
    assert isinstance(answer, Ambiguous)


async def test_no_answer_in_time_is_ambiguous_and_names_the_wait(stalling: str) -> None:
    async with client(timeout=0.3) as http:
        answer = await exchange(http, "POST", stalling, json={"text": "hi"})
    assert isinstance(answer, Ambiguous)
    assert "0.3 s" in answer.reason


async def test_the_secret_never_appears_in_a_failure() -> None:
    secret = "s3cret-in-the-url"
    url = f"http://127.0.0.1:{closed_port()}/hook?access_token={secret}"
    async with client(timeout=5) as http:
        answer = await exchange(http, "POST", url, secret=secret, json={})
    assert isinstance(answer, Unreachable)
    assert secret not in answer.reason


@pytest.mark.parametrize(
    ("environment", "trusted"),
    [({}, False), ({"NO_PROXY": "127.0.0.1"}, False), ({"HTTPS_PROXY": "http://proxy:3128"}, True)],
)
async def test_proxy_variables_are_read_per_request_only_when_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], trusted: bool
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    async with client(timeout=5) as http:
        transport = http._transport
        assert isinstance(transport, AiohttpTransport)
        session = transport.get_client()
        try:
            assert session.trust_env is trusted
        finally:
            await session.close()
