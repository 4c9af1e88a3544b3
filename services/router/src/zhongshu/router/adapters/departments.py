"""Which departments a sender belongs to (and the sender's name, for alert cards), asked of the
platform's contact API and remembered in Redis per (app, user). Messages do not carry departments,
and a whitelist may name them.

Only asked when a decision depends on it (the handler checks ``domain.departments_may_decide``),
or for the name of an admin who pressed an alert card's button, so apps without department rules
make no other call. A failed look-up (network, error code, rate
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
from typing import Protocol
from urllib.parse import quote

from redis.asyncio import Redis

from zhongshu.contracts.events import Sender
from zhongshu.platforms import Credentials, DingTalkClient, FeishuClient
from zhongshu.platforms.results import (
    Ambiguous,
    CallResult,
    CredentialsRefused,
    Ok,
    RateLimited,
    Rejected,
    Unreachable,
)
from zhongshu.router.metrics import DEPARTMENT_LOOKUPS
from zhongshu.runtime.hubconfig import App

log = logging.getLogger("zhongshu.router.departments")

KEY_PREFIX = "zhongshu:router:dept"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Found:
    departments: frozenset[str]
    name: str = ""
    """The user's name, when the app may read it (what an alert card shows of who acted)."""


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

    async def name(self, app_name: str, app: App, sender: Sender) -> str:
        """The sender's name in the contacts, or "" when it cannot be known (from the same
        look-up and cache as the departments)."""
        ...


def failed(result: CallResult) -> LookupFailed:
    """A call that found nothing, by kind: the platforms' results never carry a secret."""
    match result:
        case CredentialsRefused(reason=reason):
            return LookupFailed("credentials", reason)
        case RateLimited(code=code):
            return LookupFailed("rate_limited", f"code {code}")
        case Unreachable(reason=reason) | Ambiguous(reason=reason, status=None):
            return LookupFailed("unreachable", reason)
        case Ambiguous(reason=reason) | Rejected(reason=reason):
            return LookupFailed("error", reason)
    return LookupFailed("error", "unexpected answer")


# --------------------------------------------------------------------------- Feishu

# Contact v3 "get a single user" (open.feishu.cn/document/uAjLw4CM/ukTMukTMukTM/reference/
# contact-v3/user/get): GET /open-apis/contact/v3/users/:user_id with a tenant_access_token,
# answering {"code": 0, "data": {"user": {"department_ids": [...]}}}; limited to 1000/min and
# 50/s per app. department_ids needs the contact:user.department:readonly field scope.
FEISHU_USER_PATH = "/open-apis/contact/v3/users/{user_id}"
FEISHU_USER_QUERY = {"user_id_type": "open_id", "department_id_type": "open_department_id"}
# 41050 "no user authority error": the user is outside the app's contact scope (contact FAQ);
# the code for an open_id that does not exist at all is not published: we treat 41050 alike.
FEISHU_UNKNOWN_USER_CODES = frozenset({"41050"})


class FeishuDirectory:
    def __init__(self, feishu: FeishuClient) -> None:
        self._feishu = feishu

    def user_id(self, sender: Sender) -> str | None:
        return sender.open_id or None

    async def lookup(self, app: App, user_id: str) -> Lookup:
        creds = app.feishu
        if creds is None:
            return LookupFailed("error", "no feishu credentials")
        result = await self._feishu.call(
            Credentials(creds.app_id, creds.app_secret.get_secret_value()),
            "GET",
            FEISHU_USER_PATH.format(user_id=quote(user_id, safe="")),
            params=FEISHU_USER_QUERY,
        )
        if isinstance(result, Ok):
            user = (result.payload.get("data") or {}).get("user") or {}
            departments = frozenset(str(d) for d in user.get("department_ids") or ())
            return Found(departments, str(user.get("name") or ""))
        if type(result) is Rejected and result.code in FEISHU_UNKNOWN_USER_CODES:
            return UnknownUser()
        return failed(result)


# --------------------------------------------------------------------------- DingTalk

# "Query user details" (open.dingtalk.com/document/orgapp/query-user-details):
# POST https://oapi.dingtalk.com/topapi/v2/user/get?access_token=… {"userid": <staff id>},
# answering HTTP 200 {"errcode": 0, "result": {"dept_id_list": [1, …], …}}; errors are HTTP 200
# with a non-zero errcode. The token is the old-style one (/gettoken), not the OpenAPI's.
DINGTALK_USER_PATH = "/topapi/v2/user/get"
DINGTALK_UNKNOWN_USER = "60121"  # "找不到该用户"


class DingTalkDirectory:
    def __init__(self, dingtalk: DingTalkClient) -> None:
        self._dingtalk = dingtalk

    def user_id(self, sender: Sender) -> str | None:
        return sender.staff_id or None

    async def lookup(self, app: App, user_id: str) -> Lookup:
        creds = app.dingtalk
        if creds is None:
            return LookupFailed("error", "no dingtalk credentials")
        result = await self._dingtalk.call_oapi(
            Credentials(creds.app_key, creds.app_secret.get_secret_value()),
            DINGTALK_USER_PATH,
            json={"userid": user_id},
        )
        if isinstance(result, Ok):
            found = result.payload.get("result") or {}
            departments = frozenset(str(d) for d in found.get("dept_id_list") or ())
            return Found(departments, str(found.get("name") or ""))
        if type(result) is Rejected and result.code == DINGTALK_UNKNOWN_USER:
            return UnknownUser()
        return failed(result)


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
        found = await self._look_up(app_name, app, sender)
        return found.departments if found is not None else None

    async def name(self, app_name: str, app: App, sender: Sender) -> str:
        found = await self._look_up(app_name, app, sender)
        return found.name if found is not None else ""

    async def _look_up(self, app_name: str, app: App, sender: Sender) -> Found | None:
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
            return _decode(cached)
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
            return Found(frozenset())
        DEPARTMENT_LOOKUPS.labels(platform, "found").inc()
        await self._redis.set(key, _encode(result), px=self._ttl_ms)
        return result


def _encode(found: Found) -> str:
    return json.dumps({"departments": sorted(found.departments), "name": found.name})


def _decode(cached: bytes | str) -> Found:
    """A cached answer: ``{"departments": [...], "name": ...}``, or a bare list of departments
    (written before names were kept, and for unknown users)."""
    value = json.loads(cached)
    if isinstance(value, list):
        return Found(frozenset(str(d) for d in value))
    return Found(frozenset(str(d) for d in value.get("departments") or ()), value.get("name", ""))


class NoDepartments:
    """No look-up wired (a router built without one): departments are never known."""

    async def departments(self, app_name: str, app: App, sender: Sender) -> frozenset[str] | None:
        return None

    async def name(self, app_name: str, app: App, sender: Sender) -> str:
        return ""
