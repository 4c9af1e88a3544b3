"""The DingTalk open platform (protocols §2.3, §2.4), two generations of it:

- the OpenAPI (``api.dingtalk.com``): an app access token sent as the header
  ``x-acs-dingtalk-access-token``; errors are HTTP 4xx with a ``code`` (a refused token is 401
  ``InvalidAuthentication``); also the Stream gateway's ``connections/open``;
- the legacy oapi (``oapi.dingtalk.com``): an old-style token from ``/gettoken`` sent as the
  query parameter ``access_token``; errors are HTTP 200 with an ``errcode``, as are the
  answers of the robot webhooks (sessionWebhook, custom robots).

Tokens are cached per app and fetched again once when refused; every answer becomes a value of
:mod:`zhongshu.platforms.results`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from zhongshu.platforms.calls import (
    Credentials,
    TokenEndpoint,
    exchange,
    json_object,
    retry_after,
    with_token,
)
from zhongshu.platforms.observe import observed
from zhongshu.platforms.results import (
    Ambiguous,
    CallResult,
    Ok,
    RateLimited,
    Rejected,
    TokenResult,
    Unreachable,
)
from zhongshu.platforms.settings import DINGTALK_API_URL, DINGTALK_OAPI_URL
from zhongshu.platforms.tokens import TokenCache

TOKEN_PATH = "/v1.0/oauth2/accessToken"
OAPI_TOKEN_PATH = "/gettoken"
STREAM_OPEN_PATH = "/v1.0/gateway/connections/open"
OAPI_TOKEN_CODES = frozenset({40014, 42001})  # invalid / expired access_token
# A robot past 20 messages a minute is blocked for 10 minutes: waiting less only extends it.
ROBOT_BLOCK_S = 600.0
# oapi errcodes that mean "slow down", with how long to wait: 130101 a robot's send rate; 90002
# the platform-wide limit (help.dingtalk.io call-frequency-limit); 90018/90019 the per-app QPS
# limits as reported by users (UNCONFIRMED); 90006 the per-minute one.
OAPI_RATE_LIMITS = {130101: ROBOT_BLOCK_S, 90002: 1.0, 90006: 60.0, 90018: 1.0, 90019: 1.0}
ERR_TOO_LONG = 460101
ERR_SECURITY = 310000
TOKEN = TokenEndpoint("DingTalk", "accessToken", "expireIn", "code", "message")
OAPI_TOKEN = TokenEndpoint(
    "DingTalk", "access_token", "expires_in", "errcode", "errmsg", busy=frozenset(OAPI_RATE_LIMITS)
)


@dataclass(frozen=True)
class StreamTicket:
    """Where to open a Stream-mode WebSocket, and the one-time ticket it needs."""

    endpoint: str
    ticket: str = field(repr=False)


def classify(response: httpx.Response) -> CallResult:
    """An OpenAPI answer: 200 is success, anything else names a ``code``."""
    payload = json_object(response)
    code = str(payload.get("code", ""))
    status = response.status_code
    if status == 200:
        return Ok(payload)
    if status == 429 or "QpsLimit" in code or "Throttling" in code:
        return RateLimited(retry_after(response.headers.get("retry-after"), 1.0), code)
    if status >= 500:
        return Ambiguous(f"DingTalk answered HTTP {status} {code}".rstrip(), status)
    return Rejected(f"HTTP {status} {code}: {payload.get('message', '')}", code or None)


def token_refused(response: httpx.Response) -> bool:
    code = str(json_object(response).get("code", ""))
    return response.status_code == 401 or "token" in code.lower()


def classify_errcode(payload: dict[str, Any]) -> Ok | RateLimited | Rejected:
    """An oapi or robot-webhook answer: ``errcode`` 0 is success."""
    code = payload.get("errcode", 0)
    if code in (0, "0"):
        return Ok(payload)
    text = f"{payload.get('errmsg', '')}".strip()
    wait = OAPI_RATE_LIMITS.get(code) if isinstance(code, int) else None
    if wait is not None:
        return RateLimited(wait, str(code))
    if code == ERR_TOO_LONG:
        return Rejected(f"message too long: {text}", str(code), too_long=True)
    if code == ERR_SECURITY:
        return Rejected(f"security check failed: {text}", str(code))
    return Rejected(f"errcode {code}: {text}", str(code))


def classify_oapi(response: httpx.Response) -> CallResult:
    status = response.status_code
    if status == 429:
        return RateLimited(ROBOT_BLOCK_S, "429")
    if status >= 500:
        return Ambiguous(f"DingTalk answered HTTP {status}", status)
    if status >= 400:
        return Rejected(f"HTTP {status}: {response.text[:200]}", str(status))
    try:
        payload = response.json()
    except ValueError:
        return Ambiguous("DingTalk answered a body that is not JSON", status)
    if not isinstance(payload, dict):
        return Rejected("unexpected response body")
    return classify_errcode(payload)


def oapi_token_refused(response: httpx.Response) -> bool:
    return json_object(response).get("errcode") in OAPI_TOKEN_CODES


class DingTalkClient:
    """One pooled HTTP client for every DingTalk app and robot; the apps' tokens in ``tokens``
    (give it a Redis to share them with every replica)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_url: str = DINGTALK_API_URL,
        oapi_url: str = DINGTALK_OAPI_URL,
        tokens: TokenCache | None = None,
    ) -> None:
        self._http = http
        self.api_url = api_url.rstrip("/")
        self.oapi_url = oapi_url.rstrip("/")
        self._tokens = tokens or TokenCache()

    async def request_token(self, app: Credentials) -> TokenResult:
        """Ask for an OpenAPI access token now (not cached): ``{"accessToken", "expireIn"}``;
        wrong credentials answer HTTP 400 ``invalidClientIdOrSecret``."""
        body = {"appKey": app.key, "appSecret": app.secret}
        url = self.api_url + TOKEN_PATH
        return await observed(
            "dingtalk", "POST", url, TOKEN.ask(self._http, "POST", url, app, json=body)
        )

    async def request_oapi_token(self, app: Credentials) -> TokenResult:
        """Ask for an old-style oapi token now (not cached): ``GET /gettoken?appkey&appsecret``
        → ``{"errcode": 0, "access_token", "expires_in"}``."""
        query = {"appkey": app.key, "appsecret": app.secret}
        url = self.oapi_url + OAPI_TOKEN_PATH
        return await observed(
            "dingtalk", "GET", url, OAPI_TOKEN.ask(self._http, "GET", url, app, params=query)
        )

    async def call(
        self, app: Credentials, method: str, path: str, *, json: Any = None
    ) -> CallResult:
        """An OpenAPI call with the app's access token, fetched again once if refused."""

        async def send(token: str) -> httpx.Response | Ambiguous | Unreachable:
            headers = {"x-acs-dingtalk-access-token": token}
            url = self.api_url + path
            return await exchange(self._http, method, url, json=json, headers=headers)

        return await observed(
            "dingtalk",
            method,
            self.api_url + path,
            with_token(
                self._tokens,
                f"dingtalk:{app.key}",
                lambda: self.request_token(app),
                send,
                refused=token_refused,
                classify=classify,
                platform="DingTalk",
            ),
        )

    async def call_oapi(self, app: Credentials, path: str, *, json: Any = None) -> CallResult:
        """A legacy oapi ``POST`` with the app's old-style token (not the OpenAPI one: each has
        its own cache key), fetched again once if refused."""

        async def send(token: str) -> httpx.Response | Ambiguous | Unreachable:
            params = {"access_token": token}
            return await exchange(
                self._http, "POST", self.oapi_url + path, json=json, params=params, secret=token
            )

        return await observed(
            "dingtalk",
            "POST",
            self.oapi_url + path,
            with_token(
                self._tokens,
                f"dingtalk-oapi:{app.key}",
                lambda: self.request_oapi_token(app),
                send,
                refused=oapi_token_refused,
                classify=classify_oapi,
                platform="DingTalk",
            ),
        )

    async def post_webhook(self, url: str, body: dict[str, Any]) -> CallResult:
        """A robot webhook: a conversation's sessionWebhook, or ``{oapi_url}/robot/send`` with a
        custom robot's token (and sign) in the query."""
        return await observed("dingtalk", "POST", url, self._post_webhook(url, body))

    async def _post_webhook(self, url: str, body: dict[str, Any]) -> CallResult:
        answer = await exchange(self._http, "POST", url, json=body)
        return classify_oapi(answer) if isinstance(answer, httpx.Response) else answer

    async def open_stream(
        self,
        app: Credentials,
        *,
        subscriptions: Iterable[dict[str, str]],
        user_agent: str,
        local_ip: str,
    ) -> StreamTicket | Rejected | Ambiguous | Unreachable:
        """A fresh Stream-mode (endpoint, ticket): each WebSocket needs a new ticket."""
        body = {
            "clientId": app.key,
            "clientSecret": app.secret,
            "subscriptions": list(subscriptions),
            "ua": user_agent,
            "localIp": local_ip,
        }
        url = self.api_url + STREAM_OPEN_PATH
        return await observed("dingtalk", "POST", url, self._open_stream(app, url, body))

    async def _open_stream(
        self, app: Credentials, url: str, body: dict[str, Any]
    ) -> StreamTicket | Rejected | Ambiguous | Unreachable:
        answer = await exchange(self._http, "POST", url, json=body, secret=app.secret)
        if not isinstance(answer, httpx.Response):
            return answer
        payload = json_object(answer)
        if answer.status_code >= 500:
            return Ambiguous(f"DingTalk answered HTTP {answer.status_code}", answer.status_code)
        refused = f"DingTalk refused a Stream connection for {app.key}"
        if answer.status_code != 200:
            code = str(payload.get("code", ""))
            reason = f"{refused}: HTTP {answer.status_code} {code}".rstrip()
            return Rejected(reason, code or str(answer.status_code))
        endpoint, ticket = payload.get("endpoint"), payload.get("ticket")
        if not isinstance(endpoint, str) or not isinstance(ticket, str):
            return Rejected(f"{refused}: the answer has no endpoint/ticket")
        return StreamTicket(endpoint, ticket)
