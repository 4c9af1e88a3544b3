"""Signed POSTs to subscribers' callback URLs over one pooled HTTP client; what came of each is
returned as a value (``Posted``, ``Refused``, ``Failed``) for the callback flow to decide on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from zhongshu.contracts import headers as H
from zhongshu.contracts.definitions import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SUBSCRIPTION_HEADER,
    TIMESTAMP_HEADER,
    sign_callback,
)
from zhongshu.platforms.egress import OutboundPolicy, OutboundRefused, guarded_client

USER_AGENT = "zhongshu-notifier"
# Only the status matters; reading a little of the body lets the connection go back to the
# pool, and the cap keeps a receiver that streams megabytes from holding a worker.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Posted:
    """The receiver answered 2xx: delivered."""

    status_code: int


@dataclass(frozen=True)
class Refused:
    """Retrying cannot help (a 4xx other than 408 and 429, or a URL we will not call)."""

    reason: str
    status_code: int | None = None
    refused_by_policy: bool = False
    """Not called: the URL's host is an internal address not allowed (``egress``)."""


@dataclass(frozen=True)
class Failed:
    """Worth another try later: 5xx, 3xx, 408, 429, a timeout, a refused connection."""

    reason: str
    status_code: int | None = None


PostResult = Posted | Refused | Failed


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a callback URL we call, or None. Only http(s) with a host: a
    ``file:`` or ``unix:`` URL from an API client must never reach the HTTP stack."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return f"only http and https callback URLs are called, not {parts.scheme or 'none'!r}"
    if not parts.hostname:
        return "the callback URL has no host"
    return None


def redact(url: str) -> str:
    """The URL without credentials and query string, for logs: both may hold the receiver's
    tokens."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def classify(status_code: int, reason_phrase: str = "") -> PostResult:
    """What an HTTP answer means for a callback (pure): 2xx delivered; 408 and 429 are the
    receiver asking for later; any other 4xx says the request itself is unwanted (gone,
    unauthorised, not found), so posting it again cannot help; everything else (5xx, and 3xx:
    redirects are not followed, a signed POST must not be replayed to another host) is retried."""
    text = f"HTTP {status_code} {reason_phrase}".strip()
    if 200 <= status_code < 300:
        return Posted(status_code)
    if 400 <= status_code < 500 and status_code not in (408, 429):
        return Refused(text, status_code)
    return Failed(text, status_code)


def signed_headers(
    secret: str, body: bytes, *, event_id: str, subscription_id: str, now: float | None = None
) -> dict[str, str]:
    """The headers of one callback: signed at send time, so a retry hours later still passes a
    receiver's timestamp-age check."""
    timestamp = int(time.time() if now is None else now)
    return {
        H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_callback(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
        SUBSCRIPTION_HEADER: subscription_id,
    }


class CallbackPoster:
    """POSTs callbacks through one pooled client. Redirects are not followed; the whole
    exchange (connect, send, answer) is bounded by ``total_timeout_s`` so one stalled receiver
    holds a worker for at most that long."""

    def __init__(self, client: httpx.AsyncClient, *, total_timeout_s: float) -> None:
        self._client = client
        self._total_timeout_s = total_timeout_s

    @staticmethod
    def client(
        *, timeout_s: float, connect_timeout_s: float, policy: Callable[[], OutboundPolicy]
    ) -> httpx.AsyncClient:
        """The pooled client callbacks use (separate from the platforms' client, so a crowd of
        slow receivers cannot starve chat replies of connections), connecting only where
        ``policy`` lets it: a callback URL is anyone's choice, and must not reach the hub's
        own network."""
        return guarded_client(
            policy,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        problem = url_problem(url)
        if problem is not None:
            return Refused(problem)
        try:
            async with asyncio.timeout(self._total_timeout_s):
                return await self._post(url, body, headers)
        except TimeoutError:
            return Failed(f"no answer within {self._total_timeout_s:g}s")
        except OutboundRefused as exc:
            return Refused(str(exc), refused_by_policy=True)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return Refused(f"unusable callback URL ({type(exc).__name__})")
        except httpx.TimeoutException as exc:
            return Failed(f"timed out ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            # The exception text may repeat the URL with its query string: keep the type only.
            return Failed(f"request failed ({type(exc).__name__})")

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        request = self._client.build_request("POST", url, content=body, headers=headers)
        response = await self._client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_RESPONSE_BYTES:
                    break
        finally:
            await response.aclose()
        return classify(response.status_code, response.reason_phrase)
