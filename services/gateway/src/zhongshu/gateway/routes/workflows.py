"""`/api/v1/workflows`: DAG definitions (JSON or YAML) in the `workflows` bucket, and their runs:
starting one is a `TaskRequested` naming the workflow, which the task engine runs; run history
(each step's status and duration) comes from the warm tier."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from zhongshu.contracts.definitions import ID_PATTERN, StepDefinition, WorkflowDefinition
from zhongshu.contracts.events import TaskRequested, WorkflowRef
from zhongshu.gateway import convert, problems
from zhongshu.gateway.adapters.definitions import Stored
from zhongshu.gateway.auth import Admin, Reader, Writer
from zhongshu.gateway.context import GatewayDep, audit
from zhongshu.gateway.models.common import TASK_ID_PATTERN
from zhongshu.gateway.models.workflows import (
    Run,
    RunCreate,
    RunPage,
    StepRun,
    StepView,
    Workflow,
    WorkflowBody,
    WorkflowCreate,
    WorkflowList,
)
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import rate_limited
from zhongshu.gateway.routes import definitions as crud
from zhongshu.gateway.routes.params import (
    Cursor,
    IdempotencyKey,
    Limit,
    after,
    json_or_yaml_body,
    next_cursor,
    read_model,
)

router = APIRouter(
    prefix="/api/v1/workflows", tags=["workflows"], dependencies=[Depends(rate_limited)]
)
WorkflowId = Annotated[str, Path(pattern=ID_PATTERN.pattern)]
RunId = Annotated[str, Path(pattern=TASK_ID_PATTERN)]


def definition(tenant: str, workflow_id: str, body: WorkflowBody) -> WorkflowDefinition:
    return WorkflowDefinition(
        id=workflow_id,
        tenant=tenant,
        description=body.description,
        steps=tuple(
            StepDefinition(
                id=s.id,
                kind=s.kind,
                needs=tuple(s.needs),
                config=dict(s.config),
                retries=s.retries,
                timeout_s=s.timeout_s,
            )
            for s in body.steps
        ),
    )


def view(stored: Stored[WorkflowDefinition]) -> Workflow:
    d = stored.definition
    return Workflow(
        id=d.id,
        description=d.description,
        steps=[
            StepView(
                id=s.id,
                kind=s.kind,
                needs=list(s.needs),
                config=dict(s.config),
                retries=s.retries,
                timeout_s=s.timeout_s,
            )
            for s in d.steps
        ],
        version=stored.revision,
    )


@router.post(
    "",
    status_code=201,
    response_model=Workflow,
    summary="Create a workflow",
    openapi_extra=json_or_yaml_body(WorkflowCreate),
    responses=problems.responses(403, 409, 413, 415),
)
async def create_workflow(
    request: Request,
    response: Response,
    principal: Admin,
    gw: GatewayDep,
) -> Workflow:
    """A DAG of `collect`, `infer` and `notify` steps, as JSON or YAML (`Content-Type:
    application/yaml`). Refused with 422 when ids repeat, a need names no step, or the needs
    form a cycle (the cycle is named)."""
    body = await read_model(request, WorkflowCreate, gw.max_body_bytes)
    value = definition(principal.tenant, body.id, body)
    revision = await crud.create(gw.workflows, principal.tenant, body.id, value)
    await audit(gw, principal, "workflow.created", body.id)
    response.headers["Location"] = f"/api/v1/workflows/{body.id}"
    return view(Stored(value, revision))


@router.get(
    "", response_model=WorkflowList, summary="List workflows", responses=problems.responses(403)
)
async def list_workflows(principal: Reader, gw: GatewayDep) -> WorkflowList:
    return WorkflowList(items=[view(s) for s in await gw.workflows.list(principal.tenant)])


@router.get(
    "/{workflow_id}",
    response_model=Workflow,
    summary="Get a workflow",
    responses=problems.responses(403, 404),
)
async def get_workflow(
    workflow_id: WorkflowId,
    principal: Reader,
    gw: GatewayDep,
) -> Workflow:
    return view(await crud.existing(gw.workflows, principal.tenant, workflow_id))


@router.put(
    "/{workflow_id}",
    response_model=Workflow,
    summary="Replace a workflow",
    openapi_extra=json_or_yaml_body(WorkflowBody),
    responses=problems.responses(403, 404, 409, 413, 415),
)
async def replace_workflow(
    workflow_id: WorkflowId,
    request: Request,
    principal: Admin,
    gw: GatewayDep,
) -> Workflow:
    """A new version; runs already started keep the version they read."""
    body = await read_model(request, WorkflowBody, gw.max_body_bytes)
    value = definition(principal.tenant, workflow_id, body)
    revision = await crud.replace(gw.workflows, principal.tenant, workflow_id, value)
    await audit(gw, principal, "workflow.replaced", workflow_id)
    return view(Stored(value, revision))


@router.delete(
    "/{workflow_id}",
    status_code=204,
    summary="Delete a workflow",
    responses=problems.responses(403, 404, 409),
)
async def delete_workflow(
    workflow_id: WorkflowId,
    principal: Admin,
    gw: GatewayDep,
) -> Response:
    await crud.delete(gw.workflows, principal.tenant, workflow_id)
    await audit(gw, principal, "workflow.deleted", workflow_id)
    return Response(status_code=204)


# --- runs ----------------------------------------------------------------------------------------


@router.post(
    "/{workflow_id}/runs",
    status_code=202,
    response_model=Run,
    response_model_exclude_none=True,
    summary="Start a run",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problems.responses(403, 404, 409),
    },
)
async def start_run(
    workflow_id: WorkflowId,
    body: RunCreate,
    response: Response,
    principal: Writer,
    gw: GatewayDep,
    idempotency_key: IdempotencyKey = None,
) -> Run:
    """Queues a run (a task whose id is the run id); the task engine runs its steps. Honours
    `Idempotency-Key` like task creation."""
    await crud.existing(gw.workflows, principal.tenant, workflow_id)

    def build(task_id: str) -> TaskRequested:
        return TaskRequested(
            task_id=task_id,
            tenant=principal.tenant,
            requested_by=principal.requested_by,
            origin="api",
            workflow=WorkflowRef(name=workflow_id, version=body.version),
            inputs=dict(body.inputs),
            deliver_to=convert.targets(body.deliver_to),
            timeout_s=body.timeout_s,
        )

    accepted = await gw.desk.submit(
        principal,
        build,
        operation=f"workflows.{workflow_id}.runs",
        body=body,
        idempotency_key=idempotency_key,
    )
    run_id = accepted.request.task_id
    response.headers["Location"] = f"/api/v1/workflows/{workflow_id}/runs/{run_id}"
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Run(
        run_id=run_id,
        workflow=workflow_id,
        status="queued",
        version=int(body.version) if body.version else None,
        inputs=dict(body.inputs),
        requested_by=principal.requested_by,
    )


@router.get(
    "/{workflow_id}/runs",
    response_model=RunPage,
    response_model_exclude_none=True,
    summary="List runs",
    responses=problems.responses(403),
)
async def list_runs(
    workflow_id: WorkflowId,
    principal: Reader,
    gw: GatewayDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RunPage:
    """Runs the task engine has started, newest first (a run just queued appears once the
    engine starts it)."""
    rows = await gw.warm.runs(principal.tenant, workflow_id, after=after(cursor), limit=limit)
    return RunPage(
        items=[run_view(r) for r in rows],
        next_cursor=next_cursor(rows, limit, "started_at", "run_id"),
    )


@router.get(
    "/{workflow_id}/runs/{run_id}",
    response_model=Run,
    response_model_exclude_none=True,
    summary="Get a run with its steps",
    responses=problems.responses(403, 404),
)
async def get_run(
    workflow_id: WorkflowId,
    run_id: RunId,
    principal: Reader,
    gw: GatewayDep,
) -> Run:
    found = await gw.warm.run(principal.tenant, workflow_id, run_id)
    if found is None:
        raise ProblemError(404, "no such run (yet)", kind="not-found")
    row, steps = found
    return run_view(row).model_copy(update={"steps": [step_view(s) for s in steps]})


def run_view(row: dict[str, object]) -> Run:
    return Run.model_validate(
        {k: row.get(k) for k in Run.model_fields if k != "steps" and row.get(k) is not None}
    )


def step_view(row: dict[str, object]) -> StepRun:
    return StepRun.model_validate(
        {k: row.get(k) for k in StepRun.model_fields if row.get(k) is not None}
    )
