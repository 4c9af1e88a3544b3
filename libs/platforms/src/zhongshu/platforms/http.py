"""The HTTP client a service uses for its outgoing calls (platform APIs, the model): httpx's API
over aiohttp's connection pool (``httpx-aiohttp``, the transport the OpenAI and Anthropic SDKs
ship as their fast client).

Why not httpx's own transport: httpcore checks every pooled connection's socket through anyio's
typed attributes on every request (``has_expired`` → ``get_extra_info("is_readable")``), so a
request costs more the more connections are open. Measured on this 2-core box, POSTing JSON
to a local server at 16 in flight (client CPU per request, 3 rounds): httpx 1,240–1,400 µs,
httpx over aiohttp 274–288 µs, bare aiohttp 89–97 µs. The notifier made one to five such calls
per reply. Callers keep httpx's types, timeouts and errors; :func:`sent` tells a failure before
anything went out from one after, which the exactly-once send of a platform without idempotency
keys depends on."""

from __future__ import annotations

import urllib.request

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def client(
    *,
    timeout: httpx.Timeout | float,
    limits: httpx.Limits = DEFAULT_LIMITS,
    follow_redirects: bool = False,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose requests travel over aiohttp. Like httpx's default, it
    honours ``HTTPS_PROXY``/``NO_PROXY`` and ``SSL_CERT_FILE`` (on-premises hubs reach the
    platforms through a proxy). aiohttp's ``trust_env`` looks the proxy variables and
    ``~/.netrc`` up again on every request, through a thread: it is on only when a proxy is
    configured at start-up (py-spy put it at a visible share of the notifier's send)."""
    # NO_PROXY alone (the benchmarks set it) proxies nothing: only a proxy turns it on.
    trust_env = any(scheme != "no" for scheme in urllib.request.getproxies())

    def session() -> aiohttp.ClientSession:
        # Made on first use, inside the running loop, as aiohttp wants.
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=httpx.create_ssl_context(),
        )
        return aiohttp.ClientSession(connector=connector, trust_env=trust_env)

    return httpx.AsyncClient(
        transport=AiohttpTransport(client=session),
        timeout=timeout,
        follow_redirects=follow_redirects,
    )


# aiohttp's errors raised before the request left: no connection could be made.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.InvalidURL,
)
_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)


def cause(exc: httpx.HTTPError) -> BaseException:
    """What actually failed: the aiohttp error behind httpx-aiohttp's coarse mapping (a refused
    connection arrives as ``httpx.ConnectTimeout``), else ``exc`` itself."""
    underlying = exc.__cause__
    return underlying if isinstance(underlying, aiohttp.ClientError) else exc


def timed_out(exc: httpx.HTTPError) -> bool:
    return isinstance(cause(exc), httpx.TimeoutException | TimeoutError)


def sent(exc: httpx.HTTPError) -> bool:
    """Whether the request may have reached the server before ``exc``. httpx-aiohttp maps every
    ``aiohttp.ClientConnectionError``, a server hanging up mid-answer included, to
    ``httpx.ConnectTimeout``; the aiohttp error it chains tells the two apart."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | aiohttp.ServerTimeoutError):
        return not isinstance(cause, _NOT_SENT)
    return not isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol
    )
