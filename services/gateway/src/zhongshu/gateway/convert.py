"""Between the API's models and the bus's contracts: what a request asks for becomes a
`TaskRequested`; what the tiers hold becomes a `Task`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from zhongshu.contracts import definitions as defs
from zhongshu.contracts.events import DeliveryTarget, TaskRequested, WorkflowRef
from zhongshu.contracts.events.tasks import TaskOrigin
from zhongshu.contracts.hotcache import TaskStatus
from zhongshu.gateway.models.common import (
    CallbackTarget,
    ChatTarget,
    TargetView,
    TaskTemplate,
    WorkflowRefView,
)
from zhongshu.gateway.models.tasks import Task

TITLE_LENGTH = 80


def targets(given: Sequence[ChatTarget | CallbackTarget]) -> tuple[DeliveryTarget, ...]:
    return tuple(
        DeliveryTarget(kind="chat", app=t.app, chat_id=t.chat_id)
        if isinstance(t, ChatTarget)
        else DeliveryTarget(kind="callback", url=t.url)
        for t in given
    )


def task_requested(
    spec: TaskTemplate,
    *,
    task_id: str,
    tenant: str,
    requested_by: str,
    origin: TaskOrigin,
    schedule_id: str | None = None,
    timeout_s: float | None = None,
) -> TaskRequested:
    return TaskRequested(
        task_id=task_id,
        tenant=tenant,
        requested_by=requested_by,
        origin=origin,
        prompt=spec.prompt,
        command=spec.command,
        args=tuple(spec.args),
        workflow=(
            WorkflowRef(name=spec.workflow.name, version=spec.workflow.version)
            if spec.workflow
            else None
        ),
        inputs=dict(spec.inputs),
        deliver_to=targets(spec.deliver_to),
        schedule_id=schedule_id,
        timeout_s=timeout_s,
    )


def template_of(request: TaskRequested) -> dict[str, Any]:
    """The API's task template fields of a stored request (a schedule's body)."""
    out: dict[str, Any] = {}
    if request.prompt is not None:
        out["prompt"] = request.prompt
    if request.command is not None:
        out["command"] = request.command
        if request.args:
            out["args"] = list(request.args)
    if request.workflow is not None:
        ref: dict[str, Any] = {"name": request.workflow.name}
        if request.workflow.version is not None:
            ref["version"] = request.workflow.version
        out["workflow"] = ref
        if request.inputs:
            out["inputs"] = dict(request.inputs)
    if request.deliver_to:
        out["deliver_to"] = [_target_dict(t) for t in request.deliver_to]
    return out


def trigger_template(spec: TaskTemplate) -> defs.TaskTemplate:
    return defs.TaskTemplate(
        prompt=spec.prompt,
        command=spec.command,
        args=tuple(spec.args),
        workflow=spec.workflow.name if spec.workflow else None,
        inputs=dict(spec.inputs),
        deliver_to=targets(spec.deliver_to),
    )


def template_of_trigger(template: defs.TaskTemplate) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("prompt", "command"):
        value = getattr(template, name)
        if value is not None:
            out[name] = value
    if template.args:
        out["args"] = list(template.args)
    if template.workflow is not None:
        out["workflow"] = {"name": template.workflow}
    if template.inputs:
        out["inputs"] = dict(template.inputs)
    if template.deliver_to:
        out["deliver_to"] = [_target_dict(t) for t in template.deliver_to]
    return out


def _target_dict(target: DeliveryTarget) -> dict[str, Any]:
    return {
        k: v
        for k, v in (
            ("kind", target.kind),
            ("app", target.app),
            ("chat_id", target.chat_id),
            ("url", target.url),
        )
        if v is not None
    }


def title_of(request: TaskRequested) -> str:
    if request.prompt is not None:
        text = request.prompt
    elif request.command is not None:
        text = " ".join(("/" + request.command, *request.args))
    else:
        text = f"workflow {request.workflow.name if request.workflow else ''}".strip()
    text = " ".join(text.split())
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1] + "…"


def task_accepted(request: TaskRequested, at: datetime) -> Task:
    return Task(
        task_id=request.task_id,
        status="queued",
        origin=request.origin,
        requested_by=request.requested_by,
        title=title_of(request),
        prompt=request.prompt,
        command=request.command,
        args=list(request.args) if request.command is not None else None,
        workflow=(
            WorkflowRefView(name=request.workflow.name, version=request.workflow.version)
            if request.workflow
            else None
        ),
        inputs=dict(request.inputs) if request.workflow is not None else None,
        deliver_to=[TargetView(**_target_dict(t)) for t in request.deliver_to],
        schedule_id=request.schedule_id,
        created_at=at,
        updated_at=at,
        source="accepted",
    )


def task_from_status(status: TaskStatus) -> Task:
    return Task(
        task_id=status.task_id,
        status=status.status,
        origin=status.origin,
        requested_by=status.requested_by,
        title=status.title,
        detail=status.detail or None,
        result_text=status.result_text or None,
        updated_at=datetime.fromtimestamp(status.updated_at, UTC) if status.updated_at else None,
        source="hot",
    )


_STATES = {"queued", "running", "completed", "failed", "cancelled"}


def task_from_row(row: dict[str, Any]) -> Task:
    status = row.get("status")
    workflow = row.get("workflow")
    deliver_to = row.get("deliver_to")
    return Task(
        task_id=row["task_id"],
        status=status if status in _STATES else "queued",
        origin=row.get("origin") or "",
        requested_by=row.get("requested_by") or "",
        title=row.get("title") or "",
        prompt=row.get("prompt"),
        command=row.get("command"),
        args=[str(a) for a in args] if isinstance(args := row.get("args"), list) and args else None,
        workflow=(
            WorkflowRefView(name=workflow, version=row.get("workflow_version"))
            if workflow
            else None
        ),
        inputs=row.get("inputs") if isinstance(row.get("inputs"), dict) else None,
        deliver_to=(
            [TargetView.model_validate(t) for t in deliver_to if isinstance(t, dict)]
            if isinstance(deliver_to, list)
            else None
        ),
        schedule_id=row.get("schedule_id"),
        detail=row.get("reason"),
        result_text=row.get("result_text"),
        result_data=row.get("result_data") if isinstance(row.get("result_data"), dict) else None,
        error_code=row.get("error_code"),
        attempts=row.get("attempts"),
        created_at=row.get("created_at"),
        started_at=row.get("started_at"),
        finished_at=row.get("finished_at"),
        updated_at=row.get("updated_at"),
        duration_ms=row.get("duration_ms"),
        source="warm",
    )
