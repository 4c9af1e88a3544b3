"""`/api/v1/triggers`: event triggers in the `triggers` bucket, which the task engine watches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from zhongshu.contracts.definitions import ID_PATTERN, TriggerDefinition
from zhongshu.gateway import convert, problems
from zhongshu.gateway.adapters.definitions import Stored
from zhongshu.gateway.auth import Admin
from zhongshu.gateway.context import GatewayDep, audit
from zhongshu.gateway.models.common import TaskTemplateView
from zhongshu.gateway.models.triggers import Trigger, TriggerBody, TriggerCreate, TriggerList
from zhongshu.gateway.quotas import rate_limited
from zhongshu.gateway.routes import definitions as crud

router = APIRouter(
    prefix="/api/v1/triggers", tags=["triggers"], dependencies=[Depends(rate_limited)]
)
TriggerId = Annotated[str, Path(pattern=ID_PATTERN.pattern)]


def definition(tenant: str, trigger_id: str, body: TriggerBody) -> TriggerDefinition:
    return TriggerDefinition(
        id=trigger_id,
        tenant=tenant,
        subject=body.subject,
        condition=body.condition,
        task=convert.trigger_template(body.task),
        enabled=body.enabled,
    )


def view(stored: Stored[TriggerDefinition]) -> Trigger:
    d = stored.definition
    return Trigger(
        id=d.id,
        subject=d.subject,
        condition=d.condition,
        task=TaskTemplateView.model_validate(convert.template_of_trigger(d.task)),
        enabled=d.enabled,
        version=stored.revision,
    )


@router.post(
    "",
    status_code=201,
    response_model=Trigger,
    response_model_exclude_none=True,
    summary="Create a trigger",
    responses=problems.responses(403, 409),
)
async def create_trigger(
    body: TriggerCreate,
    response: Response,
    principal: Admin,
    gw: GatewayDep,
) -> Trigger:
    """Events on `subject` that satisfy `condition` each create a task from `task`."""
    value = definition(principal.tenant, body.id, body)
    revision = await crud.create(gw.triggers, principal.tenant, body.id, value)
    await audit(gw, principal, "trigger.created", body.id)
    response.headers["Location"] = f"/api/v1/triggers/{body.id}"
    return view(Stored(value, revision))


@router.get(
    "",
    response_model=TriggerList,
    response_model_exclude_none=True,
    summary="List triggers",
    responses=problems.responses(403),
)
async def list_triggers(principal: Admin, gw: GatewayDep) -> TriggerList:
    return TriggerList(items=[view(s) for s in await gw.triggers.list(principal.tenant)])


@router.get(
    "/{trigger_id}",
    response_model=Trigger,
    response_model_exclude_none=True,
    summary="Get a trigger",
    responses=problems.responses(403, 404),
)
async def get_trigger(
    trigger_id: TriggerId,
    principal: Admin,
    gw: GatewayDep,
) -> Trigger:
    return view(await crud.existing(gw.triggers, principal.tenant, trigger_id))


@router.put(
    "/{trigger_id}",
    response_model=Trigger,
    response_model_exclude_none=True,
    summary="Replace a trigger",
    responses=problems.responses(403, 404, 409),
)
async def replace_trigger(
    trigger_id: TriggerId,
    body: TriggerBody,
    principal: Admin,
    gw: GatewayDep,
) -> Trigger:
    value = definition(principal.tenant, trigger_id, body)
    revision = await crud.replace(gw.triggers, principal.tenant, trigger_id, value)
    await audit(gw, principal, "trigger.replaced", trigger_id)
    return view(Stored(value, revision))


@router.delete(
    "/{trigger_id}",
    status_code=204,
    summary="Delete a trigger",
    responses=problems.responses(403, 404, 409),
)
async def delete_trigger(
    trigger_id: TriggerId,
    principal: Admin,
    gw: GatewayDep,
) -> Response:
    await crud.delete(gw.triggers, principal.tenant, trigger_id)
    await audit(gw, principal, "trigger.deleted", trigger_id)
    return Response(status_code=204)
