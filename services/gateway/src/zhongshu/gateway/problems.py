"""Every error the API answers is an RFC 9457 problem (`application/problem+json`): handlers
raise :class:`Problem`, and the exception handlers here turn it, FastAPI's validation errors and
Starlette's routing errors into one shape, so clients parse one format whatever went wrong."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


class FieldError(BaseModel):
    """One invalid input: where it is (`["body", "steps", 0, "id"]`) and what is wrong."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(
        default="about:blank",
        description="URI naming the kind of problem; `about:blank` means the status says it all",
    )
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str | None = Field(default=None, description="what happened in this occurrence")
    instance: str | None = Field(default=None, description="the request path")
    errors: list[FieldError] | None = Field(
        default=None, description="each invalid input (validation problems only)"
    )


class ProblemError(Exception):
    """Raised anywhere in a request to answer with a problem (and optional headers)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})


def problem_type(kind: str | None) -> str:
    # URNs name our own kinds without promising a page to dereference.
    return f"urn:zhongshu:problem:{kind}" if kind else "about:blank"


def problem_response(
    request: Request,
    status: int,
    detail: str | None,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: list[FieldError] | None = None,
) -> JSONResponse:
    body = Problem(
        type=problem_type(kind),
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=dict(headers or {}),
        media_type=MEDIA_TYPE,
    )


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    found: list[FieldError] = []
    for error in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        found.append(FieldError(loc=loc, msg=str(error.get("msg", "")), type=error.get("type", "")))
    return found


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request, exc.status, exc.detail, kind=exc.kind, title=exc.title, headers=exc.headers
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    first = errors[0] if errors else None
    detail = (
        f"{'.'.join(str(p) for p in first.loc)}: {first.msg}" if first else "the request is invalid"
    )
    return problem_response(request, 422, detail, kind="invalid-request", errors=errors)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == HTTPStatus(exc.status_code).phrase:
        detail = None
    return problem_response(
        request, exc.status_code, detail, headers=getattr(exc, "headers", None) or {}
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)


# --- OpenAPI: which problems an operation may answer ---------------------------------------------

_DESCRIPTIONS: Mapping[int, str] = {
    400: "The request cannot be read",
    401: "No valid bearer token (missing, malformed, expired, wrong key, issuer or audience)",
    403: "The token lacks the scope this operation needs",
    404: "No such resource in the token's tenant",
    409: "Conflicts with the resource's current state",
    412: "The resource changed since it was read",
    413: "The body is too large",
    415: "The body's media type is not accepted",
    422: "The input is invalid (each error is listed under `errors`)",
    429: "A rate limit or quota is exhausted; retry after `Retry-After` seconds",
    503: "A store the operation needs (bus, Redis, PostgreSQL, JWKS) is unreachable",
}

RATE_LIMIT_HEADERS: Mapping[str, Any] = {
    "RateLimit-Limit": {
        "description": "requests allowed in the window of the closest limit",
        "schema": {"type": "integer"},
    },
    "RateLimit-Remaining": {
        "description": "requests left in that window",
        "schema": {"type": "integer"},
    },
    "RateLimit-Reset": {
        "description": "seconds until that window is whole again",
        "schema": {"type": "integer"},
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of an operation for the problems it may answer; every
    authenticated operation may also answer 401, 429 and 503."""
    every = {401, 422, 429, 503, *statuses}
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(every):
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
        }
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer"},
                },
                **RATE_LIMIT_HEADERS,
            }
        if status == 401:
            entry["headers"] = {
                "WWW-Authenticate": {
                    "description": "the Bearer challenge (RFC 6750)",
                    "schema": {"type": "string"},
                }
            }
        out[status] = entry
    return out
