"""What the Feishu and DingTalk clients share: an app's credentials, one HTTP exchange as a value,
and a call with an access token that is fetched again once when the platform refuses it.

Secrets stay out of what is returned and logged: exception texts are scrubbed of the app secret,
and httpx's request log (INFO, the whole URL) has the secrets the platforms put in URLs (oapi
``access_token`` and ``appsecret``, sessionWebhook ``session``, custom-bot hook tokens)
replaced by ``***``."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from zhongshu.platforms.http import cause, sent, timed_out
from zhongshu.platforms.observe import record_status
from zhongshu.platforms.results import (
    Ambiguous,
    CallResult,
    CredentialsRefused,
    Rejected,
    Token,
    TokenResult,
    Unreachable,
)
from zhongshu.platforms.tokens import TokenCache
from zhongshu.runtime import conditions


@dataclass(frozen=True)
class Credentials:
    """An app's ``key`` (Feishu's App ID, DingTalk's AppKey / Client ID) and ``secret``; the
    secret is never in a ``repr``."""

    key: str
    secret: str = field(repr=False)


Answer = httpx.Response | Ambiguous | Unreachable
"""One exchange: the platform's answer, or why there is none."""


async def exchange(
    http: httpx.AsyncClient, method: str, url: str, *, secret: str | None = None, **kwargs: Any
) -> Answer:
    """Send one request. Not sent at all (no connection, not a URL) is ``Unreachable``; sent but
    not answered (timeout, dropped connection) is ``Ambiguous``."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.InvalidURL:
        return Unreachable("not a valid URL")
    except httpx.HTTPError as exc:
        if sent(exc):
            return Ambiguous(describe(exc, http, secret))
        return Unreachable(describe(exc, http, secret))
    record_status(response.status_code)
    return response


def describe(exc: Exception, http: httpx.AsyncClient, secret: str | None = None) -> str:
    """The exception's type and text, never the request (its body may hold a secret)."""
    failure = cause(exc) if isinstance(exc, httpx.HTTPError) else exc
    if isinstance(exc, httpx.HTTPError) and timed_out(exc):
        limit = http.timeout.read or http.timeout.connect or 0
        text = f"no answer within {limit:g} s"
    else:
        text = f"{type(failure).__name__}: {str(failure) or type(failure).__name__}"
    return text.replace(secret, "***") if secret else text


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or an empty one (not JSON, not an object)."""
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def retry_after(value: str | None, default: float) -> float:
    """A rate-limit header's seconds (at least 50 ms), or ``default`` when absent or unreadable."""
    try:
        return max(0.05, float(value)) if value is not None else default
    except ValueError:
        return default


@dataclass(frozen=True)
class TokenEndpoint:
    """How one platform's token endpoint answers: the JSON keys of the token, its lifetime, the
    error code and message, and the codes that only mean "slow down" (no verdict on the app)."""

    platform: str
    token: str
    lifetime: str
    code: str
    message: str
    busy: frozenset[Any] = frozenset()

    async def ask(
        self, http: httpx.AsyncClient, method: str, url: str, app: Credentials, **kwargs: Any
    ) -> TokenResult:
        """One fresh token request (``kwargs`` carry the credentials as the endpoint wants)."""
        answer = await exchange(http, method, url, secret=app.secret, **kwargs)
        if not isinstance(answer, httpx.Response):
            return Unreachable(answer.reason)
        payload, status, date = json_object(answer), answer.status_code, answer.headers.get("date")
        code, token = payload.get(self.code), payload.get(self.token)
        if isinstance(token, str) and code in (0, None) and status == 200:
            return Token(token, seconds(payload.get(self.lifetime)), date)
        busy = isinstance(code, int | str) and code in self.busy
        if not code or busy or status == 429 or status >= 500:
            return Unreachable(f"{self.platform} answered the token request: HTTP {status}")
        message = str(payload.get(self.message, ""))
        refused = f"{self.platform} refused the credentials of {app.key}: {self.code} {code}"
        return CredentialsRefused(
            f"{refused} {message}".rstrip(),
            str(code),
            message=message,
            status=status,
            date=date,
        )


def seconds(value: Any, default: float = 7200.0) -> float:
    """A token's lifetime as answered (both platforms issue 2-hour tokens)."""
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


async def with_token(
    tokens: TokenCache,
    key: str,
    fetch: Callable[[], Awaitable[TokenResult]],
    send: Callable[[str], Awaitable[Answer]],
    *,
    refused: Callable[[httpx.Response], bool],
    classify: Callable[[httpx.Response], CallResult],
    platform: str,
) -> CallResult:
    """``send`` with the cached token for ``key``; when the platform ``refused`` it, drop it,
    fetch a new one and send once more. A fresh token refused again is ``CredentialsRefused``."""
    refusal: httpx.Response | None = None
    for _ in range(2):
        token = await cached_token(tokens, key, fetch)
        if isinstance(token, Unreachable):
            return Unreachable(f"{platform} token request failed: {token.reason}")
        if not isinstance(token, str):
            return token
        answer = await send(token)
        if not isinstance(answer, httpx.Response):
            return answer
        if not refused(answer):
            return classify(answer)
        refusal = answer
        await tokens.invalidate(key, token)
    assert refusal is not None
    last = classify(refusal)
    return CredentialsRefused(
        f"{platform} refused a token it had just issued: {getattr(last, 'reason', last)}",
        last.code if isinstance(last, Rejected) else None,
        status=refusal.status_code,
        date=refusal.headers.get("date"),
    )


class _NoToken(Exception):
    """Carries a failed fetch out of ``TokenCache.get`` (which caches nothing then)."""

    def __init__(self, result: CredentialsRefused | Unreachable) -> None:
        super().__init__(result.reason)
        self.result = result


async def cached_token(
    tokens: TokenCache, key: str, fetch: Callable[[], Awaitable[TokenResult]]
) -> str | CredentialsRefused | Unreachable:
    async def fetch_or_raise() -> tuple[str, float]:
        result = await fetch()
        if isinstance(result, Token):
            conditions.set(f"credentials.{key}", ok=True)
            return result.value, result.lifetime_s
        if isinstance(result, CredentialsRefused):  # the watchdog alerts on it (heartbeat)
            conditions.set(f"credentials.{key}", ok=False, detail=result.reason)
        raise _NoToken(result)

    try:
        return await tokens.get(key, fetch_or_raise)
    except _NoToken as exc:
        return exc.result


_SECRET_IN_URL = re.compile(r"([?&](?:access_token|appsecret|session)=|/hook/)[^&/\s\"']+", re.I)


class RedactSecrets(logging.Filter):
    """Replaces the secrets the platforms carry in URLs by ``***`` in a log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_IN_URL.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, RedactSecrets) for f in _httpx_log.filters):
    _httpx_log.addFilter(RedactSecrets())
