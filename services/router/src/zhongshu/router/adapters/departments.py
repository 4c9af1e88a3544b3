"""Which departments a sender belongs to, asked of the platform's contact API and remembered in
Redis per (app, user). Messages do not carry departments, and a whitelist may name them.

Only asked when a decision depends on it (the handler checks ``domain.departments_may_decide``),
so apps without department rules never call out. A failed look-up (network, error code, rate
limit) is logged, counted in ``zhongshu_router_department_lookups_total`` and answered ``None``:
``domain.decide_access`` then lets only users and chats decide, so a sender whom only a
department would admit is refused politely (fail closed) until the platform answers again.
Failures are not remembered: the next message asks again (the per-user rate limit bounds how
often)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from redis.asyncio import Redis

from zhongshu.contracts.events import Sender
from zhongshu.router.metrics import DEPARTMENT_LOOKUPS
from zhongshu.runtime.hubconfig import App
from zhongshu.runtime.tokens import TokenCache

log = logging.getLogger("zhongshu.router.departments")

KEY_PREFIX = "zhongshu:router:dept"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Found:
    departments: frozenset[str]


@dataclass(frozen=True)
class UnknownUser:
    """The platform does not know the user, or the app's contact scope does not include them:
    either way the user is in none of the departments the app can see."""


@dataclass(frozen=True)
class LookupFailed:
    kind: str
    """``rate_limited``, ``unreachable``, ``credentials`` or ``error``: the metric's outcome."""
    reason: str
    """For the log: codes and exception types only, never a token, secret or URL."""


Lookup = Found | UnknownUser | LookupFailed


class Directory(Protocol):
    """One platform's contact API."""

    def user_id(self, sender: Sender) -> str | None:
        """The id this platform's look-up takes, or None when the sender has none (an external
        user, say)."""
        ...

    async def lookup(self, app: App, user_id: str) -> Lookup: ...


class DepartmentSource(Protocol):
    async def departments(self, app_name: str, app: App, sender: Sender) -> frozenset[str] | None:
        """The sender's department ids, or None when they cannot be known right now."""
        ...


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


class _TokenRefused(Exception):
    """The platform refused the app's credentials (the message names codes, not secrets)."""


# --------------------------------------------------------------------------- Feishu

# Contact v3 "get a single user" (open.feishu.cn/document/uAjLw4CM/ukTMukTMukTM/reference/
# contact-v3/user/get): GET /open-apis/contact/v3/users/:user_id with a tenant_access_token,
# answering {"code": 0, "data": {"user": {"department_ids": [...]}}}; limited to 1000/min and
# 50/s per app. department_ids needs the contact:user.department:readonly field scope.
FEISHU_USER_PATH = "/open-apis/contact/v3/users/{user_id}"
FEISHU_USER_QUERY = {"user_id_type": "open_id", "department_id_type": "open_department_id"}
# Token errors (protocols §1.4, lark-oapi's bucket): refresh the token and retry once.
FEISHU_TOKEN_CODES = frozenset({99991663, 99991664, 99991665, 99991666, 99991668})
FEISHU_RATE_LIMITED = 99991400  # with HTTP 429 (protocols §1.4)
# 41050 "no user authority error": the user is outside the app's contact scope (contact FAQ);
# the code for an open_id that does not exist at all is not published: we treat 41050 alike.
FEISHU_UNKNOWN_USER_CODES = frozenset({41050})


class FeishuDirectory:
    def __init__(self, http: httpx.AsyncClient, tokens: TokenCache, *, base_url: str) -> None:
        self._http = http
        self._tokens = tokens
        self._base = base_url.rstrip("/")

    def user_id(self, sender: Sender) -> str | None:
        return sender.open_id or None

    async def lookup(self, app: App, user_id: str) -> Lookup:
        creds = app.feishu
        if creds is None:
            return LookupFailed("error", "no feishu credentials")
        key = f"feishu:{creds.app_id}"
        url = self._base + FEISHU_USER_PATH.format(user_id=quote(user_id, safe=""))
        for attempt in range(2):
            try:
                token = await self._tokens.get(
                    key,
                    lambda: self._fetch_token(creds.app_id, creds.app_secret.get_secret_value()),
                )
                response = await self._http.get(
                    url, params=FEISHU_USER_QUERY, headers={"Authorization": f"Bearer {token}"}
                )
            except _TokenRefused as exc:
                return LookupFailed("credentials", str(exc))
            except httpx.HTTPError as exc:
                return LookupFailed("unreachable", type(exc).__name__)
            payload = _json(response)
            code = payload.get("code")
            if response.status_code == 200 and code == 0:
                user = (payload.get("data") or {}).get("user") or {}
                return Found(frozenset(str(d) for d in user.get("department_ids") or ()))
            if code in FEISHU_TOKEN_CODES and attempt == 0:
                await self._tokens.invalidate(key, token)
                continue
            if response.status_code == 429 or code == FEISHU_RATE_LIMITED:
                return LookupFailed("rate_limited", f"code {code} (HTTP {response.status_code})")
            if code in FEISHU_UNKNOWN_USER_CODES:
                return UnknownUser()
            return LookupFailed("error", f"code {code} (HTTP {response.status_code})")
        return LookupFailed("credentials", "tenant_access_token refused twice")

    async def _fetch_token(self, app_id: str, app_secret: str) -> tuple[str, float]:
        """Protocols §1.4: {"code": 0, "tenant_access_token": "t-…", "expire": 7200}."""
        response = await self._http.post(
            self._base + "/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": app_id, "app_secret": app_secret},
        )
        payload = _json(response)
        if payload.get("code") != 0 or "tenant_access_token" not in payload:
            raise _TokenRefused(
                f"Feishu refused the credentials of {app_id}: {payload.get('code')}"
            )
        return str(payload["tenant_access_token"]), float(payload.get("expire", 7200))


# --------------------------------------------------------------------------- DingTalk

# "Query user details" (open.dingtalk.com/document/orgapp/query-user-details):
# POST https://oapi.dingtalk.com/topapi/v2/user/get?access_token=… {"userid": <staff id>},
# answering HTTP 200 {"errcode": 0, "result": {"dept_id_list": [1, …], …}}; errors are HTTP 200
# with a non-zero errcode. The token is the old-style one: GET /gettoken?appkey=…&appsecret=…
# → {"errcode": 0, "access_token": "…", "expires_in": 7200}.
DINGTALK_USER_PATH = "/topapi/v2/user/get"
DINGTALK_UNKNOWN_USER = 60121  # "找不到该用户"
DINGTALK_TOKEN_CODES = frozenset({40014, 42001})  # invalid / expired access_token
# 90002 is the platform-wide limit (help.dingtalk.io call-frequency-limit); 90018/90019 are the
# per-app QPS limits as reported by users (UNCONFIRMED); 90006 the per-minute one.
DINGTALK_RATE_LIMITED = frozenset({90002, 90006, 90018, 90019})


class DingTalkDirectory:
    def __init__(self, http: httpx.AsyncClient, tokens: TokenCache, *, oapi_url: str) -> None:
        self._http = http
        self._tokens = tokens
        self._oapi = oapi_url.rstrip("/")

    def user_id(self, sender: Sender) -> str | None:
        return sender.staff_id or None

    async def lookup(self, app: App, user_id: str) -> Lookup:
        creds = app.dingtalk
        if creds is None:
            return LookupFailed("error", "no dingtalk credentials")
        # Not the notifier's "dingtalk:" key: that one holds the new-API (api.dingtalk.com) token.
        key = f"dingtalk-oapi:{creds.app_key}"
        for attempt in range(2):
            try:
                token = await self._tokens.get(
                    key,
                    lambda: self._fetch_token(creds.app_key, creds.app_secret.get_secret_value()),
                )
                response = await self._http.post(
                    self._oapi + DINGTALK_USER_PATH,
                    params={"access_token": token},
                    json={"userid": user_id},
                )
            except _TokenRefused as exc:
                return LookupFailed("credentials", str(exc))
            except httpx.HTTPError as exc:
                return LookupFailed("unreachable", type(exc).__name__)
            payload = _json(response)
            code = payload.get("errcode")
            if response.status_code == 200 and code == 0:
                result = payload.get("result") or {}
                return Found(frozenset(str(d) for d in result.get("dept_id_list") or ()))
            if code in DINGTALK_TOKEN_CODES and attempt == 0:
                await self._tokens.invalidate(key, token)
                continue
            if response.status_code == 429 or code in DINGTALK_RATE_LIMITED:
                return LookupFailed("rate_limited", f"errcode {code} (HTTP {response.status_code})")
            if code == DINGTALK_UNKNOWN_USER:
                return UnknownUser()
            return LookupFailed("error", f"errcode {code} (HTTP {response.status_code})")
        return LookupFailed("credentials", "access_token refused twice")

    async def _fetch_token(self, app_key: str, app_secret: str) -> tuple[str, float]:
        response = await self._http.get(
            self._oapi + "/gettoken", params={"appkey": app_key, "appsecret": app_secret}
        )
        payload = _json(response)
        if payload.get("errcode") != 0 or "access_token" not in payload:
            raise _TokenRefused(
                f"DingTalk refused the credentials of {app_key}: {payload.get('errcode')}"
            )
        return str(payload["access_token"]), float(payload.get("expires_in", 7200))


# --------------------------------------------------------------------------- the cache


def cache_key(app_name: str, user_id: str) -> str:
    """``{app}`` is a hash tag, as for the rate-limit keys."""
    return f"{KEY_PREFIX}:{{{app_name}}}:{user_id}"


class CachedDepartments:
    """The handler's ``DepartmentSource``: Redis first (shared by every replica), else the
    platform's directory; a found answer is kept ``ttl_s``, an unknown user ``negative_ttl_s``
    (shorter: a new hire is usually added to the contacts soon after their first message)."""

    def __init__(
        self,
        redis: Redis,
        directories: Mapping[str, Directory],
        *,
        ttl_s: float = 3600.0,
        negative_ttl_s: float = 300.0,
    ) -> None:
        self._redis = redis
        self._directories = dict(directories)
        self._ttl_ms = round(ttl_s * 1000)
        self._negative_ttl_ms = round(negative_ttl_s * 1000)

    async def departments(self, app_name: str, app: App, sender: Sender) -> frozenset[str] | None:
        platform = app.platform
        directory = self._directories.get(platform)
        user = directory.user_id(sender) if directory is not None else None
        if directory is None or user is None:
            DEPARTMENT_LOOKUPS.labels(platform, "no_user_id").inc()
            return None
        key = cache_key(app_name, user)
        cached = await self._redis.get(key)
        if cached is not None:
            DEPARTMENT_LOOKUPS.labels(platform, "cached").inc()
            return frozenset(json.loads(cached))
        result = await directory.lookup(app, user)
        if isinstance(result, LookupFailed):
            DEPARTMENT_LOOKUPS.labels(platform, result.kind).inc()
            log.warning(
                "department look-up for %s in app %s failed (%s: %s); deciding without departments",
                user,
                app_name,
                result.kind,
                result.reason,
            )
            return None
        if isinstance(result, UnknownUser):
            DEPARTMENT_LOOKUPS.labels(platform, "unknown_user").inc()
            await self._redis.set(key, "[]", px=self._negative_ttl_ms)
            return frozenset()
        DEPARTMENT_LOOKUPS.labels(platform, "found").inc()
        await self._redis.set(key, json.dumps(sorted(result.departments)), px=self._ttl_ms)
        return result.departments


class NoDepartments:
    """No look-up wired (a router built without one): departments are never known."""

    async def departments(self, app_name: str, app: App, sender: Sender) -> frozenset[str] | None:
        return None
