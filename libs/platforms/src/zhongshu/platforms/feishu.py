"""The Feishu (Lark) open platform (protocols §1.3, §1.4): the app's ``tenant_access_token``
(cached), calls with it that fetch it again once when Feishu refuses it, calls that need none
(custom-bot webhooks), and the long connection's endpoint. Every answer becomes a value of
:mod:`zhongshu.platforms.results`::

    feishu = FeishuClient(http, base_url=settings.feishu_base_url, tokens=TokenCache(redis))
    result = await feishu.call(Credentials(app_id, secret), "GET", "/open-apis/im/v1/chats")
    if isinstance(result, Ok): ...
"""

from __future__ import annotations

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
from zhongshu.platforms.settings import FEISHU_BASE_URL
from zhongshu.platforms.tokens import TokenCache

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
WS_ENDPOINT_PATH = "/callback/ws/endpoint"
# Token errors (protocols §1.4, lark-oapi's bucket): fetch the token again and retry once.
TOKEN_CODES = frozenset({99991663, 99991664, 99991665, 99991666, 99991668})
# The API's frequency limit (with HTTP 429), a message's 5 updates/s, a custom bot's limit.
RATE_LIMIT_CODES = frozenset({99991400, 230020, 11232})
TOO_LONG = 230025
TOKEN = TokenEndpoint(
    "Feishu", "tenant_access_token", "expire", "code", "msg", busy=RATE_LIMIT_CODES
)


@dataclass(frozen=True)
class Endpoint:
    """Where to open an app's long connection (the URL carries a one-time ticket) and the
    timings Feishu sent with it (``ClientConfig``)."""

    url: str = field(repr=False)
    client_config: dict[str, Any] = field(default_factory=dict)


def classify(response: httpx.Response) -> CallResult:
    """An answer of the open platform: ``code`` 0 is success (custom bots may say
    ``StatusCode``); the rate limits wait ``x-ogw-ratelimit-reset`` seconds."""
    payload = json_object(response)
    code = payload.get("code", payload.get("StatusCode"))
    text = str(payload.get("msg", ""))
    status = response.status_code
    if status == 429 or code in RATE_LIMIT_CODES:
        wait = retry_after(response.headers.get("x-ogw-ratelimit-reset"), 1.0)
        return RateLimited(wait, str(code if code is not None else 429))
    if status >= 500:
        return Ambiguous(f"Feishu answered HTTP {status}", status)
    if code == 0 and status == 200:
        return Ok(payload)
    if code == TOO_LONG:
        return Rejected(f"content too long: {text}", str(code), too_long=True)
    return Rejected(f"code {code} (HTTP {status}): {text}", None if code is None else str(code))


def token_refused(response: httpx.Response) -> bool:
    return json_object(response).get("code") in TOKEN_CODES


class FeishuClient:
    """One pooled HTTP client for every Feishu app; the apps' tokens in ``tokens`` (give it a
    Redis to share them with every replica)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str = FEISHU_BASE_URL,
        tokens: TokenCache | None = None,
    ) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens or TokenCache()

    async def request_token(self, app: Credentials) -> TokenResult:
        """Ask for a ``tenant_access_token`` now (not cached): ``{"code": 0,
        "tenant_access_token": "t-…", "expire": 7200}``; a wrong App ID answers code 10003, a
        wrong secret 10014."""
        body = {"app_id": app.key, "app_secret": app.secret}
        url = self.base_url + TOKEN_PATH
        return await observed(
            "feishu", "POST", url, TOKEN.ask(self._http, "POST", url, app, json=body)
        )

    async def call(
        self,
        app: Credentials,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> CallResult:
        """``method path`` with the app's token (``Authorization: Bearer``), fetched again once
        when Feishu refuses it."""

        async def send(token: str) -> httpx.Response | Ambiguous | Unreachable:
            headers = {"Authorization": f"Bearer {token}"}
            return await exchange(
                self._http, method, self.base_url + path, json=json, params=params, headers=headers
            )

        return await observed(
            "feishu",
            method,
            self.base_url + path,
            with_token(
                self._tokens,
                f"feishu:{app.key}",
                lambda: self.request_token(app),
                send,
                refused=token_refused,
                classify=classify,
                platform="Feishu",
            ),
        )

    async def call_without_token(self, method: str, path: str, *, json: Any = None) -> CallResult:
        """A call that carries its own authorization (a custom bot's hook token and sign)."""
        return await observed(
            "feishu", method, self.base_url + path, self._without_token(method, path, json)
        )

    async def _without_token(self, method: str, path: str, json: Any) -> CallResult:
        answer = await exchange(self._http, method, self.base_url + path, json=json)
        return classify(answer) if isinstance(answer, httpx.Response) else answer

    async def ws_endpoint(self, app: Credentials) -> Endpoint | Rejected | Ambiguous | Unreachable:
        """A long connection's endpoint for the app (protocols §1.3; asked with the App ID and
        secret, no token)."""
        url = self.base_url + WS_ENDPOINT_PATH
        return await observed("feishu", "POST", url, self._ws_endpoint(app))

    async def _ws_endpoint(self, app: Credentials) -> Endpoint | Rejected | Ambiguous | Unreachable:
        answer = await exchange(
            self._http,
            "POST",
            self.base_url + WS_ENDPOINT_PATH,
            secret=app.secret,
            json={"AppID": app.key, "AppSecret": app.secret},
            headers={"locale": "zh"},
        )
        if not isinstance(answer, httpx.Response):
            return answer
        if answer.status_code >= 500:
            return Ambiguous(f"Feishu answered HTTP {answer.status_code}", answer.status_code)
        payload = json_object(answer)
        code = payload.get("code")
        if code != 0:
            return Rejected(
                f"Feishu refused a long connection for {app.key}: code {code} "
                f"{payload.get('msg', '')} (HTTP {answer.status_code})",
                None if code is None else str(code),
            )
        data = payload.get("data")
        data = data if isinstance(data, dict) else {}
        url, config = data.get("URL"), data.get("ClientConfig")
        if not isinstance(url, str):
            return Rejected("no URL in the endpoint answer")
        return Endpoint(url, config if isinstance(config, dict) else {})
