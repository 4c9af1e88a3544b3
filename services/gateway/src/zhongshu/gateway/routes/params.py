"""Parameters several resources share: paging, `Idempotency-Key`, and bodies that may be JSON or
YAML (workflow definitions)."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

import yaml
from fastapi import Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from zhongshu.gateway.domain import cursor as cursors
from zhongshu.gateway.problems import ProblemError
from zhongshu.runtime.safeyaml import load_untrusted

M = TypeVar("M", bound=BaseModel)

Limit = Annotated[int, Query(ge=1, le=200, description="at most this many items")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page"),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description=(
            "Retry-safe creation: the same key (per tenant, kept 48 h) returns the same task "
            "without creating another; reusing it for a different body is refused with 422."
        ),
    ),
]

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def after(cursor: str | None) -> cursors.After:
    if cursor is None:
        return None
    try:
        return cursors.decode(cursor)
    except cursors.InvalidCursor as exc:
        raise ProblemError(422, str(exc), kind="invalid-cursor") from None


def next_cursor(rows: list[dict[str, Any]], limit: int, time_key: str, id_key: str) -> str | None:
    if len(rows) < limit:
        return None
    last = rows[-1]
    return cursors.encode(last[time_key], str(last[id_key]))


def json_or_yaml_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring a body of ``model`` as JSON or YAML."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": ref} for media in (*JSON_TYPES, YAML_TYPES[0])},
        }
    }


async def read_model(request: Request, model: type[M], max_bytes: int) -> M:
    """The body as ``model``, from JSON or YAML (`Content-Type` decides); problems as the rest of
    the API answers them (413, 415, 422)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in JSON_TYPES and media not in YAML_TYPES and not media.endswith("+json"):
        raise ProblemError(
            415,
            f"send the body as {', '.join((*JSON_TYPES, *YAML_TYPES))}, not {media[:64]!r}",
            kind="unsupported-media-type",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ProblemError(413, f"the body is over {max_bytes} bytes", kind="too-large")
    try:
        data = _parse_yaml(bytes(body)) if media in YAML_TYPES else json.loads(body)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:  # RecursionError: `[[[[…` JSON
        kind = "YAML" if media in YAML_TYPES else "JSON"
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"not valid {kind}: {_first_line(exc)}", "type": "parse"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _parse_yaml(raw: bytes) -> Any:
    # No aliases ("billion laughs"), unreadable explicit tags and too-deep nesting are
    # yaml.YAMLError like any other bad YAML (runtime.safeyaml, found by fuzzing).
    return load_untrusted(raw.decode("utf-8"))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
