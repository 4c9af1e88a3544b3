"""The outbound guard refuses internal addresses after resolution, connects to the address it
checked, re-checks redirects, and lets through what the operator allowed. Against a real local
server; names resolve through the guard's resolver seam."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from zhongshu.devstack.fakes.local_server import LocalServer
from zhongshu.platforms.egress import OutboundPolicy, OutboundRefused, guarded_client

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),
    ("[::1]", "loopback"),
    ("[::]", "unspecified"),
    ("[fe80::1]", "link-local"),
    ("[fc00::1]", "private"),
    ("[fd12:3456::1]", "private"),
    ("[ff02::1]", "multicast"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:169.254.169.254]", "link-local"),
    ("[64:ff9b::a00:1]", "private"),
]


class Names:
    """The resolver seam: what each name resolves to, and how often it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.table[host]


@pytest_asyncio.fixture
async def site() -> AsyncIterator[LocalServer]:
    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"host={request.headers['host']}")

    async def hop(request: Request) -> RedirectResponse:
        return RedirectResponse(request.query_params["to"])

    app = Starlette(routes=[Route("/page", page), Route("/hop", hop)])
    async with LocalServer(app) as server:
        yield server


@pytest.mark.parametrize(("host", "kind"), REFUSED)
async def test_each_internal_range_is_refused_before_connecting(host: str, kind: str) -> None:
    async with guarded_client(OutboundPolicy()) as client:
        with pytest.raises(OutboundRefused) as refused:
            await client.get(f"http://{host}:9/")
    assert refused.value.kind == kind


async def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    names = Names({"intranet.example": ["93.184.216.34", "10.0.0.7"]})
    async with guarded_client(OutboundPolicy(), resolver=names) as client:
        with pytest.raises(OutboundRefused, match=r"intranet\.example is a private address"):
            await client.get("https://intranet.example/")


async def test_localhost_is_refused_through_the_system_resolver(site: LocalServer) -> None:
    async with guarded_client(OutboundPolicy()) as client:
        with pytest.raises(OutboundRefused, match="loopback"):
            await client.get(f"http://localhost:{site.port}/page")


async def test_public_addresses_pass_the_check() -> None:
    addresses = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert OutboundPolicy().vet("example.com", addresses) == addresses


async def test_an_allowed_host_is_reached_at_the_address_resolved_once_with_its_own_host_header(
    site: LocalServer,
) -> None:
    names = Names({"hooks.test": ["127.0.0.1"]})
    policy = OutboundPolicy.allowing(["hooks.test"])
    async with guarded_client(policy, resolver=names) as client:
        response = await client.get(f"http://hooks.test:{site.port}/page")
    assert response.text == f"host=hooks.test:{site.port}"
    assert names.asked == ["hooks.test"]


async def test_an_allowed_network_is_reached(site: LocalServer) -> None:
    async with guarded_client(OutboundPolicy.allowing(["127.0.0.0/8"])) as client:
        response = await client.get(f"{site.base_url}/page")
    assert response.status_code == 200


async def test_a_redirect_to_a_private_address_is_refused(site: LocalServer) -> None:
    names = Names({"hooks.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]})
    policy = OutboundPolicy.allowing(["hooks.test"])
    start = f"http://hooks.test:{site.port}/hop"
    async with guarded_client(policy, resolver=names, follow_redirects=True) as client:
        hop = await client.get(start, params={"to": f"http://hooks.test:{site.port}/page"})
        assert hop.text == f"host=hooks.test:{site.port}"
        with pytest.raises(OutboundRefused, match="link-local"):
            await client.get(start, params={"to": "http://metadata.test/latest/meta-data/"})
        with pytest.raises(OutboundRefused, match="loopback"):
            await client.get(start, params={"to": f"http://127.0.0.1:{site.port}/page"})


async def test_the_policy_is_read_at_each_new_connection(site: LocalServer) -> None:
    policy = [OutboundPolicy()]
    limits = httpx.Limits(max_keepalive_connections=0)
    async with guarded_client(lambda: policy[0], limits=limits) as client:
        with pytest.raises(OutboundRefused):
            await client.get(f"{site.base_url}/page")
        policy[0] = OutboundPolicy.allowing(["127.0.0.1"])
        assert (await client.get(f"{site.base_url}/page")).status_code == 200


async def test_tls_to_the_pinned_address_verifies_and_sends_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connected to the resolved address, TLS still names the URL's host: SNI carries it and
    the certificate is verified for it (an IP-pinned client that sent the IP would fail)."""
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_side)
    names: list[str | None] = []

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_side.sni_callback = sni  # type: ignore[assignment]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        host = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"host:"))
        body = host.split(b":", 1)[1].strip()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    names_table = Names({"hooks.test": ["127.0.0.1"]})
    policy = OutboundPolicy.allowing(["hooks.test"])
    try:
        async with guarded_client(policy, resolver=names_table) as client:
            response = await client.get(f"https://hooks.test:{port}/")
    finally:
        server.close()
        await server.wait_closed()
    assert response.text == f"hooks.test:{port}"
    assert names == ["hooks.test"]
