"""`/api/v1/tasks`: create a task (prompt, command or workflow), read one (hot tier first, then
the warm tier), list them (warm tier, keyset pages), cancel one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from zhongshu.contracts.hotcache import TaskStatus
from zhongshu.gateway import convert, problems
from zhongshu.gateway.auth import Reader, Writer
from zhongshu.gateway.context import Gateway, GatewayDep, audit
from zhongshu.gateway.models.common import TASK_ID_PATTERN, TaskCreate
from zhongshu.gateway.models.tasks import Task, TaskOrigin, TaskPage, TaskState
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import rate_limited
from zhongshu.gateway.routes.params import Cursor, IdempotencyKey, Limit, after, next_cursor

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], dependencies=[Depends(rate_limited)])

TaskIdPath = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="the task's id")]
FINISHED = ("completed", "failed", "cancelled")


def location(task_id: str) -> str:
    return f"/api/v1/tasks/{task_id}"


@router.post(
    "",
    status_code=202,
    response_model=Task,
    response_model_exclude_none=True,
    summary="Create a task",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problems.responses(403, 409),
    },
)
async def create_task(
    body: TaskCreate,
    response: Response,
    principal: Writer,
    gw: GatewayDep,
    idempotency_key: IdempotencyKey = None,
) -> Task:
    """Queue a prompt, a command or a workflow run; the result goes to `deliver_to`. Answers
    202 once the request is durably on the bus; follow `Location` for its status."""
    if (
        body.workflow is not None
        and await gw.workflows.get(principal.tenant, body.workflow.name) is None
    ):
        raise ProblemError(
            422, f"no workflow {body.workflow.name!r} in this tenant", kind="unknown-workflow"
        )
    accepted = await gw.desk.submit(
        principal,
        lambda task_id: convert.task_requested(
            body,
            task_id=task_id,
            tenant=principal.tenant,
            requested_by=principal.requested_by,
            origin="api",
            timeout_s=body.timeout_s,
        ),
        operation="tasks.create",
        body=body,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = location(accepted.request.task_id)
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return convert.task_accepted(accepted.request, accepted.at)


@router.get(
    "",
    response_model=TaskPage,
    response_model_exclude_none=True,
    summary="List tasks",
    responses=problems.responses(403),
)
async def list_tasks(
    principal: Reader,
    gw: GatewayDep,
    status: Annotated[TaskState | None, Query()] = None,
    origin: Annotated[TaskOrigin | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="created at or after (RFC 3339)")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TaskPage:
    """The tenant's tasks from the warm tier, newest first."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = await gw.warm.tasks(
        principal.tenant,
        status=status,
        origin=origin,
        since=since,
        after=after(cursor),
        limit=limit,
    )
    return TaskPage(
        items=[convert.task_from_row(r) for r in rows],
        next_cursor=next_cursor(rows, limit, "created_at", "task_id"),
    )


@router.get(
    "/{task_id}",
    response_model=Task,
    response_model_exclude_none=True,
    summary="Get a task",
    responses=problems.responses(403, 404),
)
async def get_task(
    task_id: TaskIdPath,
    principal: Reader,
    gw: GatewayDep,
) -> Task:
    """The task's freshest status (hot tier), else its record (warm tier)."""
    return await find(gw, principal.tenant, task_id)


@router.post(
    "/{task_id}/cancel",
    status_code=202,
    response_model=Task,
    response_model_exclude_none=True,
    summary="Cancel a task",
    responses=problems.responses(403, 404, 409),
)
async def cancel_task(
    task_id: TaskIdPath,
    principal: Writer,
    gw: GatewayDep,
) -> Task:
    """Record the task as cancelled (a final `TaskFailed` with `error_code: cancelled` on its
    event subject). Its result is then not wanted: read models show it cancelled. A task already
    finished answers 409. The agent does not yet interrupt a model call in progress."""
    task = await find(gw, principal.tenant, task_id)
    if task.status in FINISHED:
        raise ProblemError(409, f"the task is already {task.status}", kind="task-finished")
    await gw.desk.cancel(principal, task_id)
    await audit(gw, principal, "task.cancelled", task_id)
    now = datetime.now(UTC)
    await gw.hot.replace(
        principal.tenant,
        TaskStatus(
            task_id=task_id,
            status="cancelled",
            title=task.title,
            detail=f"cancelled by {principal.requested_by}",
            origin=task.origin,
            requested_by=task.requested_by,
            updated_at=now.timestamp(),
        ),
    )
    return task.model_copy(
        update={"status": "cancelled", "updated_at": now, "error_code": "cancelled"}
    )


async def find(gw: Gateway, tenant: str, task_id: str) -> Task:
    """Another tenant's task is 404, like a missing one: existence does not leak."""
    status = await gw.hot.status(tenant, task_id)
    if status is not None:
        return convert.task_from_status(status)
    row = await gw.warm.task(tenant, task_id)
    if row is not None:
        return convert.task_from_row(row)
    raise ProblemError(404, "no such task", kind="not-found")
