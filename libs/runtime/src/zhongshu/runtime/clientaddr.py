"""Who sent a request: the peer's address, or, when the peer is a proxy we trust (the edge in
front of every service: Caddy under ``zhongshu up`` on loopback, an ingress controller in a
cluster), the address that proxy put in ``X-Forwarded-For``.

The watchdog counts refused webhooks and tokens per source; behind a proxy the peer is always the
proxy, so without this every attacker would be "127.0.0.1". Only trusted peers are believed: a
client talking to a service directly cannot choose its own address by sending the header.
Caddy (``reverse_proxy``) replaces an untrusted client's header with the client's address, so the
rightmost entry that is not itself a trusted proxy is the client."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TRUSTED_PROXIES_ENV = "ZHONGSHU_TRUSTED_PROXIES"
DEFAULT_TRUSTED_PROXIES = "127.0.0.1/32,::1/128"


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks; a bad entry is a clear error."""
    networks: list[IPNetwork] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{TRUSTED_PROXIES_ENV}: {entry!r} is not an IP address or network"
            ) from None
    return tuple(networks)


@lru_cache(maxsize=1)
def trusted_proxies() -> tuple[IPNetwork, ...]:
    """From ``ZHONGSHU_TRUSTED_PROXIES`` (empty: trust no proxy), read once per process."""
    return parse_networks(os.environ.get(TRUSTED_PROXIES_ENV, DEFAULT_TRUSTED_PROXIES))


def _trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str, forwarded_for: str | None, networks: tuple[IPNetwork, ...] | None = None
) -> str:
    """The request's source: ``peer`` unless it is a trusted proxy that said who it forwards."""
    trusted = trusted_proxies() if networks is None else networks
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
