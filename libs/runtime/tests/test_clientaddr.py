"""The source address the watchdog counts refusals by: the peer, or the client a trusted proxy
forwarded, never an address an untrusted client claims for itself."""

from __future__ import annotations

import pytest

from zhongshu.runtime.clientaddr import client_address, parse_networks

LOOPBACK = parse_networks("127.0.0.1/32,::1/128")


def test_a_direct_client_is_its_peer_address_whatever_it_claims() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", LOOPBACK) == "203.0.113.9"


def test_behind_a_trusted_proxy_the_forwarded_client_counts() -> None:
    assert client_address("127.0.0.1", "203.0.113.9", LOOPBACK) == "203.0.113.9"
    assert client_address("::1", "2001:db8::7", LOOPBACK) == "2001:db8::7"


def test_the_rightmost_untrusted_hop_is_the_client_not_a_spoofed_leftmost_one() -> None:
    nets = parse_networks("127.0.0.1,10.0.0.0/8")
    assert client_address("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3", nets) == "203.0.113.9"


def test_without_a_header_or_with_only_proxies_in_it() -> None:
    assert client_address("127.0.0.1", None, LOOPBACK) == "127.0.0.1"
    assert client_address("127.0.0.1", "127.0.0.1", LOOPBACK) == "127.0.0.1"


def test_an_empty_setting_trusts_no_proxy() -> None:
    assert client_address("127.0.0.1", "203.0.113.9", parse_networks("")) == "127.0.0.1"


def test_a_bad_network_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ZHONGSHU_TRUSTED_PROXIES: 'nope'"):
        parse_networks("127.0.0.1, nope")


def test_a_webhook_request_names_the_client_its_proxy_forwarded() -> None:
    from zhongshu.runtime.webhooks import WebhookRequest

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    def request(peer: str, forwarded: str | None) -> WebhookRequest:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        scope = {"type": "http", "client": (peer, 50000), "headers": headers}
        return WebhookRequest(scope, receive, {})

    assert request("127.0.0.1", "203.0.113.9").client == "203.0.113.9"
    assert request("198.51.100.4", "203.0.113.9").client == "198.51.100.4"
    assert request("127.0.0.1", None).client == "127.0.0.1"
