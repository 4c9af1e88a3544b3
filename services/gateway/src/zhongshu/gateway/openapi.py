"""The OpenAPI document: FastAPI's, plus the schemas of bodies it cannot see (read by hand
because they may be YAML) and of the problem details every error uses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from zhongshu.gateway.models.workflows import WorkflowBody, WorkflowCreate
from zhongshu.gateway.problems import Problem

EXTRA_MODELS: tuple[type[BaseModel], ...] = (Problem, WorkflowBody, WorkflowCreate)

DESCRIPTION = """\
The zhongshu (中枢) hub's open API: create tasks (a prompt, a command or a workflow run) and
read their status; schedule them (cron in a time zone, or `@every`); trigger them from events;
define DAG workflows; subscribe to signed callbacks; see your limits.

Every request needs a JWT bearer token whose `tenant` claim scopes what it sees. Errors are RFC
9457 problem details (`application/problem+json`). Every answer carries `RateLimit-*` headers;
a 429 carries `Retry-After`.
"""


def document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=DESCRIPTION,
        routes=app.routes,
        separate_input_output_schemas=False,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in EXTRA_MODELS:
        extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, extra)
    app.openapi_schema = schema
    return schema
