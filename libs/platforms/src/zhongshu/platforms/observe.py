"""Every platform call as a CLIENT span and in two metrics, labelled by the API's route template
(``/open-apis/im/v1/messages/{id}/reply``, never a concrete id: bounded label values) and by
the typed result's outcome.

Secrets the platforms carry in URLs stay out: the query (DingTalk's ``access_token``, a
sessionWebhook's ``session``) is never recorded, and a custom bot's hook token in the path is
replaced by ``***``."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Awaitable
from typing import Final, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Histogram

from zhongshu.platforms.results import (
    Ambiguous,
    CredentialsRefused,
    Ok,
    RateLimited,
    Rejected,
    Unreachable,
)

R = TypeVar("R")

REQUESTS: Final = Counter(
    "zhongshu_platform_requests_total",
    "Calls to a platform API by route template and outcome (ok, rate_limited, rejected, "
    "credentials_refused, ambiguous, unreachable): the platform-send success rate",
    ("platform", "api", "outcome"),
)
SECONDS: Final = Histogram(
    "zhongshu_platform_request_seconds",
    "Platform API calls, token refreshes included, by route template",
    ("platform", "api"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OUTCOMES: Final = (
    "ok",
    "rate_limited",
    "rejected",
    "credentials_refused",
    "ambiguous",
    "unreachable",
)

_TRACER = trace.get_tracer("zhongshu.platforms")
# A path segment that names nothing variable: a version (v1, v1.0) or a word (messages,
# groupMessages, tenant_access_token). Anything with a digit or past 48 characters is an id.
_WORD = re.compile(r"v\d+(?:\.\d+)?|[A-Za-z_-]{1,48}")
_SECRET_AFTER: Final = frozenset({"hook"})


def route(path: str) -> str:
    """The route template of a concrete path (its query dropped): ids become ``{id}``, and the
    segment after ``hook`` (a custom bot's token) ``{token}``."""
    segments = path.split("?", 1)[0].split("/")
    out: list[str] = []
    for index, segment in enumerate(segments):
        if index and segments[index - 1] in _SECRET_AFTER:
            out.append("{token}")
        elif not segment or _WORD.fullmatch(segment):
            out.append(segment)
        else:
            out.append("{id}")
    return "/".join(out)


def safe_path(path: str) -> str:
    """The path without its query, a hook token replaced by ``***``."""
    segments = path.split("?", 1)[0].split("/")
    return "/".join(
        "***" if index and segments[index - 1] in _SECRET_AFTER else segment
        for index, segment in enumerate(segments)
    )


def outcome(result: object) -> str:
    """The outcome label of a typed result (a token, an endpoint or a ticket is ``ok``)."""
    if isinstance(result, CredentialsRefused):
        return "credentials_refused"
    if isinstance(result, Rejected):
        return "rejected"
    if isinstance(result, RateLimited):
        return "rate_limited"
    if isinstance(result, Ambiguous):
        return "ambiguous"
    if isinstance(result, Unreachable):
        return "unreachable"
    return "ok"


async def observed(platform: str, method: str, url: str, call: Awaitable[R]) -> R:
    """Await ``call`` (one logical platform call, its token refresh included) inside a CLIENT
    span, then count its outcome and time it."""
    parts = urllib.parse.urlsplit(url)
    api = route(parts.path)
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "url.path": safe_path(parts.path),
        "url.template": api,
        "zhongshu.platform": platform,
    }
    if parts.port:
        attributes["server.port"] = parts.port
    started = time.perf_counter()
    with _TRACER.start_as_current_span(
        f"{method} {api}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        result = await call
        label = outcome(result)
        if span.is_recording():
            _describe(span, result, label)
    SECONDS.labels(platform, api).observe(time.perf_counter() - started)
    REQUESTS.labels(platform, api, label).inc()
    return result


def _describe(span: trace.Span, result: object, label: str) -> None:
    span.set_attribute("zhongshu.outcome", label)
    if label == "ok":
        if isinstance(result, Ok):
            data = result.payload.get("data")
            sent = data.get("message_id") if isinstance(data, dict) else None
            sent = sent or result.payload.get("processQueryKey")
            if isinstance(sent, str) and sent:
                span.set_attribute("zhongshu.platform_message_id", sent)
        return
    code = getattr(result, "code", None)
    if code:
        span.set_attribute("zhongshu.platform.code", str(code))
    span.set_attribute("error.type", label)
    span.set_status(StatusCode.ERROR, label)


def record_status(status: int) -> None:
    """The HTTP status of the exchange under way, on its call's span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
