"""`/api/v1/audit`: the tenant's audit trail from the warm tier, newest first (admin scope)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from zhongshu.gateway import problems
from zhongshu.gateway.auth import Admin
from zhongshu.gateway.context import GatewayDep
from zhongshu.gateway.models.audit import AuditEntry, AuditPage
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import rate_limited
from zhongshu.gateway.routes.params import Cursor, Limit, after, next_cursor

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[Depends(rate_limited)])


def entry(row: dict[str, Any]) -> AuditEntry:
    data = row["data"]
    return AuditEntry(
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        target=str(data.get("target", "")),
        outcome=row["outcome"],
        detail=str(data.get("detail", "")),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        kind=row["kind"],
        event_id=row["event_id"],
        seq=row["stream_seq"],
        pos=row["pos"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


@router.get(
    "",
    response_model=AuditPage,
    response_model_exclude_none=True,
    summary="List audit records",
    responses=problems.responses(403),
)
async def list_audit(
    principal: Admin,
    gw: GatewayDep,
    since: Annotated[datetime | None, Query(description="at or after (RFC 3339)")] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=200,
            description="an action (`config.pushed`), or a prefix ending in `.` or `*` (`dlq.*`)",
        ),
    ] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditPage:
    """The audit records of the token's tenant, newest first, with their chain hashes."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    last = after(cursor)
    seq = None
    if last is not None:
        try:
            seq = (last[0], int(last[1]))
        except ValueError:
            raise ProblemError(
                422, "the cursor is not one this API gave out", kind="invalid-cursor"
            ) from None
    rows = await gw.warm.audit(
        principal.tenant, since=since, action=action, actor=actor, after=seq, limit=limit
    )
    return AuditPage(
        items=[entry(r) for r in rows],
        next_cursor=next_cursor(rows, limit, "at", "stream_seq"),
    )
