"""The OpenAPI document is valid, and the running API keeps to it: schemathesis generates
requests for every operation (with an admin token) and checks that no answer is a 5xx and every
answer's status, media type, headers and body are the ones the document declares."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.tests.gateway_testing import StartGateway

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def assert_valid_openapi(document: dict[str, Any]) -> None:
    try:
        from openapi_spec_validator import validate
    except ImportError:  # not installed: schemathesis' loader must at least read every operation
        loaded = schemathesis.openapi.from_dict(document)
        unreadable = [r.err() for r in loaded.get_all_operations() if isinstance(r, Err)]
        assert unreadable == []
        return
    validate(document)


async def test_the_openapi_document_is_valid_and_documents_every_operation(
    start_gateway: StartGateway,
) -> None:
    api = await start_gateway()
    answer = await api.client.get("/openapi.json")
    document = answer.json()
    assert document["openapi"].startswith("3.")
    assert_valid_openapi(document)
    operations = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    assert len(operations) == 35
    assert {"POST /api/v1/tasks", "POST /api/v1/workflows/{workflow_id}/runs"} < operations
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            problem = operation["responses"]["401"]["content"]
            assert "application/problem+json" in problem, (method, path)


def fuzz(base_url: str, token: str) -> tuple[list[str], Counter[int]]:
    """Every operation, each with its own examples; returns the failures, one line each, and
    how many answers had each status."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"unreadable operation: {result.err()}")
            continue
        operation = result.ok()

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}"[:2000])
    return failures, statuses


async def test_every_operation_answers_as_documented_and_never_with_a_5xx(
    start_gateway: StartGateway,
) -> None:
    api = await start_gateway()
    auth = api.auth("admin")
    # Something to find: a workflow (runs refer to it) and a subscription.
    workflow = {
        "id": "w",
        "steps": [{"id": "a", "kind": "collect", "config": {"url": "https://x"}}],
    }
    assert (await api.client.post("/api/v1/workflows", json=workflow, headers=auth)).is_success
    failures, statuses = await asyncio.to_thread(fuzz, api.base_url, api.token("admin"))
    assert failures == [], "\n\n".join(failures)
    # It did exercise the API: successes as well as refusals of invalid input.
    assert sum(statuses.values()) >= 30 * 5, statuses
    assert any(200 <= status < 300 for status in statuses), statuses
    assert statuses[422] > 0, statuses
