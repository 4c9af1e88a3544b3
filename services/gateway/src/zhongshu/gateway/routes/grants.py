"""`/api/v1/grants`: roles of the tenant's chat users per app, in the `grants` bucket every router
replica watches (a change applies to the next message), and `/api/v1/tokens/revoked`: API tokens
refused from now on. Admin only; each change is audited on `audit.<tenant>.grants` or
`audit.<tenant>.token`."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

import nats.errors
from fastapi import APIRouter, Depends, Path, Query, Response

from zhongshu.contracts import grants as contract
from zhongshu.gateway import problems
from zhongshu.gateway.adapters import Unavailable
from zhongshu.gateway.auth import Admin, Principal
from zhongshu.gateway.context import Gateway, GatewayDep
from zhongshu.gateway.models.grants import (
    AppName,
    Grant,
    GrantCreate,
    GrantList,
    RevokedToken,
    TokenRevocation,
    UserId,
)
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import rate_limited
from zhongshu.gateway.routes.params import Cursor, Limit
from zhongshu.runtime import revocations

GRANTS_KIND = "grants"
TOKENS_KIND = "token"  # as `zhongshu token create|revoke` audit

router = APIRouter(prefix="/api/v1/grants", tags=["access"], dependencies=[Depends(rate_limited)])
tokens = APIRouter(prefix="/api/v1/tokens", tags=["access"], dependencies=[Depends(rate_limited)])

RoleParam = Annotated[contract.Role, Path(description="one of " + ", ".join(contract.ROLES))]


BUS_ERRORS = (nats.errors.Error, TimeoutError)


@contextlib.contextmanager
def bus_errors(what: str) -> Iterator[None]:
    try:
        yield
    except BUS_ERRORS as exc:
        raise Unavailable(f"the bus (NATS) cannot {what}") from exc


def view(grant: contract.Grant) -> Grant:
    return Grant(
        app=grant.app,
        user=grant.user,
        role=grant.role,
        granted_by=grant.granted_by,
        granted_at=grant.granted_at,
        note=grant.note,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, tenant: str) -> str:
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        key = ""
    if not key.startswith(f"{tenant}."):
        raise ProblemError(422, "the cursor is not one this API gave out", kind="invalid-cursor")
    return key


async def _audit(
    gw: Gateway, principal: Principal, kind: str, action: str, target: str, detail: str
) -> None:
    await gw.audit.record(
        tenant=principal.tenant,
        actor=principal.requested_by,
        token=principal.token_id,
        action=action,
        target=target,
        detail=detail,
        kind=kind,
    )


@router.get(
    "",
    response_model=GrantList,
    response_model_exclude_none=True,
    summary="List grants",
    responses=problems.responses(403),
)
async def list_grants(
    principal: Admin,
    gw: GatewayDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    app: Annotated[str | None, Query(max_length=63, description="only this app's")] = None,
    user: Annotated[str | None, Query(max_length=200, description="only this user's")] = None,
) -> GrantList:
    """The tenant's grants by app, then user, then role."""
    after = decode_cursor(cursor, principal.tenant) if cursor is not None else ""
    with bus_errors("list grants"):
        stored = await gw.grants.list(principal.tenant)
    rows = [
        (key, g)
        for key, g in stored
        if key > after and (app is None or g.app == app) and (user is None or g.user == user)
    ]
    page = rows[:limit]
    more = len(rows) > limit
    return GrantList(
        items=[view(g) for _, g in page],
        next_cursor=encode_cursor(page[-1][0]) if more else None,
    )


@router.post(
    "",
    status_code=201,
    response_model=Grant,
    summary="Grant a role",
    responses={**problems.responses(403), 200: {"description": "the user already had the role"}},
)
async def create_grant(
    body: GrantCreate, response: Response, principal: Admin, gw: GatewayDep
) -> Grant:
    """Applies to the user's next message on every router replica. Answers 200 with the
    existing grant when the user already has the role."""
    grant = contract.Grant(
        tenant=principal.tenant,
        app=body.app,
        user=body.user,
        role=body.role,
        granted_by=principal.requested_by,
        granted_at=_now(),
        note=body.note,
    )
    with bus_errors("store the grant"):
        changed = await gw.grants.grant(grant)
    response.headers["Location"] = (
        f"/api/v1/grants/{body.app}/{quote(body.user, safe='')}/{body.role}"
    )
    if not changed.changed:
        response.status_code = 200
        return view(changed.grant)
    await _audit(gw, principal, GRANTS_KIND, "grant.added", f"{body.app}/{body.user}", body.role)
    return view(grant)


@router.delete(
    "/{app}/{user}/{role}",
    status_code=204,
    summary="Revoke a role",
    responses=problems.responses(403, 404),
)
async def delete_grant(
    app: Annotated[AppName, Path()],
    user: Annotated[UserId, Path()],
    role: RoleParam,
    principal: Admin,
    gw: GatewayDep,
) -> Response:
    """Applies to the user's next message; roles from zhongshu.yaml's `access` stay."""
    with bus_errors("revoke the grant"):
        changed = await gw.grants.revoke(principal.tenant, app, user, role)
    if not changed.changed:
        raise ProblemError(404, f"{user} has no granted {role} in {app}", kind="not-found")
    await _audit(gw, principal, GRANTS_KIND, "grant.revoked", f"{app}/{user}", role)
    return Response(status_code=204)


@tokens.post(
    "/revoked",
    status_code=201,
    response_model=RevokedToken,
    response_model_exclude_none=True,
    summary="Revoke an API token",
    responses={**problems.responses(403), 200: {"description": "it was already revoked"}},
)
async def revoke_token(
    body: TokenRevocation, response: Response, principal: Admin, gw: GatewayDep
) -> RevokedToken:
    """Every gateway replica refuses the token with 401 from now on (a watched bucket, read
    from memory). Give `expires_at` (the token's `exp`) so the record goes when the token would
    have; `zhongshu token revoke` does the same from the command line."""
    record = contract.RevokedToken(
        jti=body.jti,
        tenant=principal.tenant,
        revoked_by=principal.requested_by,
        revoked_at=_now(),
        expires_at=body.expires_at or 0,
        reason=body.reason,
    )
    try:
        revision = await revocations.revoke(gw.revoked_kv, record)
    except BUS_ERRORS as exc:
        raise Unavailable("the bus (NATS) cannot store the revocation") from exc
    if revision is None:
        response.status_code = 200
    else:
        # This replica refuses the token before answering; the others within milliseconds.
        await gw.revoked.applied(revision)
        await _audit(gw, principal, TOKENS_KIND, "token.revoked", f"token:{body.jti}", body.reason)
    return RevokedToken(
        jti=record.jti,
        revoked_by=record.revoked_by,
        revoked_at=record.revoked_at,
        expires_at=body.expires_at,
        reason=record.reason,
    )
