"""Outbound requests to addresses someone else names (task callbacks, the agent's ``fetch_url``):
refused when the host is or resolves to a loopback, link-local, private, unspecified, multicast
or reserved address, unless the operator allowed that host or network (SSRF).

The check is made where the connection is opened, in the HTTP client's network backend: the
name is resolved once, every address it resolves to is checked, and the socket is opened to a
checked address. Nothing resolves the name a second time (a rebinding DNS server could answer
differently), while TLS still verifies and sends SNI for the name and the Host header stays the
URL's. Every new connection goes through it, so a followed redirect is checked too."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import httpcore
import httpx

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: the seam tests replace to make a name resolve elsewhere."""

_NAT64 = IPv6Network("64:ff9b::/96")
DEFAULT_LIMITS = httpx.Limits()


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): checked as itself, so
    ``::ffff:127.0.0.1`` is loopback."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(address.packed[-4:])
    return None


def internal_kind(address: Address) -> str | None:
    """What kind of non-public address ``address`` is, or None for a public one."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return internal_kind(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


class OutboundRefused(Exception):
    """A request to a host the policy does not let us reach. The message names the host and
    the kind of address, never the URL (its path and query may hold a receiver's token)."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        super().__init__(
            f"{host} is a {kind} address ({address}); not allowed for outbound requests"
        )
        self.host = host
        self.address = address
        self.kind = kind


@dataclass(frozen=True)
class OutboundPolicy:
    """Public addresses only, plus what the operator allowed: host names (exact, any address
    they resolve to) and networks (``10.20.0.0/16``, ``127.0.0.1``)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> OutboundPolicy:
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in entries:
            text = entry.strip().strip("[]")
            if not text:
                continue
            try:
                networks.append(ip_network(text, strict=False))
            except ValueError:
                hosts.add(text.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def vet(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses of ``host`` that may be connected to, in order; raises
        ``OutboundRefused`` if any is internal and not allowed (one bad answer among good ones
        is a name pointed at us, not a reason to pick another)."""
        found = list(addresses)
        if host.lower().rstrip(".") in self.hosts:
            return found
        for text in found:
            address = ip_address(text.split("%", 1)[0])
            kind = internal_kind(address)
            if kind is not None and not any(address in net for net in self.networks):
                raise OutboundRefused(host, text, kind)
        return found


def live_policy(entries: Callable[[], tuple[str, ...]]) -> Callable[[], OutboundPolicy]:
    """The policy of a live configuration's allow-list, parsed again only when it changed."""
    parsed: dict[tuple[str, ...], OutboundPolicy] = {}

    def current() -> OutboundPolicy:
        now = entries()
        policy = parsed.get(now)
        if policy is None:
            parsed.clear()
            policy = parsed[now] = OutboundPolicy.allowing(now)
        return policy

    return current


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy applied to every TCP connection."""

    def __init__(
        self,
        policy: Callable[[], OutboundPolicy],
        *,
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._backend = backend or httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int, within_s: float | None) -> list[str]:
        try:
            ip_address(host.split("%", 1)[0])
            return [host]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(within_s):
                found = await self._resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not found:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        vetted = self._policy().vet(host, await self._addresses(host, port, timeout))
        error: Exception | None = None
        for address in vetted:
            try:
                return await self._backend.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused(path, path, "unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded backend. httpx takes no network backend, so the
    pool it built is replaced by the same pool over ours (``_pool`` is what its
    ``handle_async_request`` sends through; the tests fail if an upgrade changes that)."""

    def __init__(
        self,
        policy: Callable[[], OutboundPolicy],
        *,
        resolver: Resolver = system_resolver,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            # CA bundles from the environment (SSL_CERT_FILE) still apply; proxies do not.
            ssl_context=httpx.create_ssl_context(trust_env=True),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver=resolver),
        )


def guarded_client(
    policy: OutboundPolicy | Callable[[], OutboundPolicy],
    *,
    resolver: Resolver = system_resolver,
    limits: httpx.Limits = DEFAULT_LIMITS,
    **options: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every connection obeys ``policy`` (a callable is asked at
    each new connection: a live configuration). No proxies from the environment: a proxy would
    connect on our behalf, past the check."""
    current = policy if callable(policy) else (lambda: policy)
    transport = GuardedTransport(current, resolver=resolver, limits=limits)
    return httpx.AsyncClient(transport=transport, trust_env=False, **options)
