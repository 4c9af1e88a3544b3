"""`/api/v1/schedules`: cron (in a time zone) or `@every` schedules of a task template, stored
only as JetStream message schedules (see `adapters.schedules`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Path, Response

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.definitions import ID_PATTERN
from zhongshu.contracts.events import TaskRequested
from zhongshu.contracts.ids import new_event_id
from zhongshu.gateway import convert, problems
from zhongshu.gateway.adapters.schedules import ScheduleConflict, ScheduleRefused, StoredSchedule
from zhongshu.gateway.adapters.taskbus import SOURCE
from zhongshu.gateway.auth import Admin, Principal
from zhongshu.gateway.context import Gateway, GatewayDep, audit
from zhongshu.gateway.domain import cadence
from zhongshu.gateway.models.common import TaskTemplateView
from zhongshu.gateway.models.schedules import Schedule, ScheduleBody, ScheduleCreate, ScheduleList
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import rate_limited

log = logging.getLogger("zhongshu.gateway.schedules")

router = APIRouter(
    prefix="/api/v1/schedules", tags=["schedules"], dependencies=[Depends(rate_limited)]
)
ScheduleId = Annotated[str, Path(pattern=ID_PATTERN.pattern)]


def location(schedule_id: str) -> str:
    return f"/api/v1/schedules/{schedule_id}"


@router.post(
    "",
    status_code=201,
    response_model=Schedule,
    response_model_exclude_none=True,
    summary="Create a schedule",
    responses=problems.responses(403, 409),
)
async def create_schedule(
    body: ScheduleCreate,
    response: Response,
    principal: Admin,
    gw: GatewayDep,
) -> Schedule:
    """Each firing creates a task (origin `schedule`) named `<id>:fire.<time>`."""
    stored = await _store(gw, principal, body.id, body, expected_seq=0)
    await audit(gw, principal, "schedule.created", body.id)
    response.headers["Location"] = location(body.id)
    return view(stored)


@router.get(
    "",
    response_model=ScheduleList,
    response_model_exclude_none=True,
    summary="List schedules",
    responses=problems.responses(403),
)
async def list_schedules(principal: Admin, gw: GatewayDep) -> ScheduleList:
    return ScheduleList(items=[view(s) for s in await gw.schedules.list(principal.tenant)])


@router.get(
    "/{schedule_id}",
    response_model=Schedule,
    response_model_exclude_none=True,
    summary="Get a schedule",
    responses=problems.responses(403, 404),
)
async def get_schedule(
    schedule_id: ScheduleId,
    principal: Admin,
    gw: GatewayDep,
) -> Schedule:
    return view(await _existing(gw, principal.tenant, schedule_id))


@router.put(
    "/{schedule_id}",
    response_model=Schedule,
    response_model_exclude_none=True,
    summary="Replace a schedule",
    responses=problems.responses(403, 404, 409),
)
async def replace_schedule(
    schedule_id: ScheduleId,
    body: ScheduleBody,
    principal: Admin,
    gw: GatewayDep,
) -> Schedule:
    current = await _existing(gw, principal.tenant, schedule_id)
    stored = await _store(gw, principal, schedule_id, body, expected_seq=current.seq)
    await audit(gw, principal, "schedule.replaced", schedule_id)
    return view(stored)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    summary="Delete a schedule",
    responses=problems.responses(403, 404),
)
async def delete_schedule(
    schedule_id: ScheduleId,
    principal: Admin,
    gw: GatewayDep,
) -> Response:
    """Purges the schedule's subject: it fires no more."""
    await _existing(gw, principal.tenant, schedule_id)
    await gw.schedules.delete(principal.tenant, schedule_id)
    await audit(gw, principal, "schedule.deleted", schedule_id)
    return Response(status_code=204)


async def _existing(gw: Gateway, tenant: str, schedule_id: str) -> StoredSchedule:
    found = await gw.schedules.get(tenant, schedule_id)
    if found is None:
        raise ProblemError(404, "no such schedule", kind="not-found")
    return found


async def _store(
    gw: Gateway, principal: Principal, schedule_id: str, body: ScheduleBody, *, expected_seq: int
) -> StoredSchedule:
    parsed = cadence.parse(body.schedule, body.time_zone)
    template = convert.task_requested(
        body.task,
        task_id=schedule_id,
        tenant=principal.tenant,
        requested_by=f"schedule:{schedule_id}",
        origin="schedule",
        schedule_id=schedule_id,
        timeout_s=body.task.timeout_s,
    )
    # One id per stored version: a schedule deleted and created again within the duplicate
    # window must not be dropped as a duplicate of its earlier self.
    version_id = new_event_id()
    envelope = wire.make_envelope(template, id=version_id, source=SOURCE, tenant=principal.tenant)
    raw = wire.encode(envelope)
    time_zone = body.time_zone if parsed.cron is not None else None
    try:
        seq = await gw.schedules.put(
            principal.tenant,
            schedule_id,
            spec=parsed.spec,
            time_zone=time_zone,
            body=raw,
            msg_id=version_id,
            expected_seq=expected_seq,
        )
    except ScheduleConflict:
        what = "exists" if expected_seq == 0 else "changed while it was being replaced"
        raise ProblemError(409, f"schedule {schedule_id!r} {what}", kind="conflict") from None
    except ScheduleRefused as exc:
        raise ProblemError(
            422, f"nats-server refused the schedule: {exc}", kind="invalid-schedule"
        ) from None
    return StoredSchedule(
        schedule_id=schedule_id,
        spec=parsed.spec,
        time_zone=time_zone,
        body=raw,
        seq=seq,
        stored_at=envelope.time,
    )


def view(stored: StoredSchedule, *, now: datetime | None = None) -> Schedule:
    now = now or datetime.now(UTC)
    try:
        request = wire.decode(stored.body, TaskRequested).data
        task = convert.template_of(request)
        if request.timeout_s is not None:
            task["timeout_s"] = request.timeout_s
    except (msgspec.DecodeError, ValueError):
        log.warning(
            "schedule %s holds no TaskRequested; shown without its task", stored.schedule_id
        )
        task = None
    try:
        parsed = cadence.parse(stored.spec, stored.time_zone)
        upcoming: datetime | None = cadence.next_fire(
            parsed, time_zone=stored.time_zone, now=now, since=stored.stored_at
        )
    except cadence.InvalidSchedule:  # written by something else, in a notation we do not read
        upcoming = None
    return Schedule(
        id=stored.schedule_id,
        schedule=stored.spec,
        time_zone=stored.time_zone,
        task=TaskTemplateView.model_validate(task) if task is not None else None,
        next_fire_at=upcoming,
        created_at=stored.stored_at,
        version=stored.seq,
    )
