"""`/api/v1/subscriptions`: callback URLs for the tenant's task and run events, in the
`subscriptions` bucket the notifier watches. A subscription's signing secret is derived from the
hub's callback key (`contracts.definitions.subscription_secret`), so it is never stored: the
answer to its creation shows it once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from zhongshu.contracts import definitions as defs
from zhongshu.contracts.definitions import ID_PATTERN, TASK_CALLBACKS_ID, subscription_secret
from zhongshu.gateway import problems
from zhongshu.gateway.adapters.definitions import Stored
from zhongshu.gateway.auth import Admin
from zhongshu.gateway.context import Gateway, GatewayDep, audit
from zhongshu.gateway.models.subscriptions import (
    Delivery,
    DeliveryPage,
    SigningSecret,
    Subscription,
    SubscriptionBody,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionList,
)
from zhongshu.gateway.quotas import rate_limited
from zhongshu.gateway.routes import definitions as crud
from zhongshu.gateway.routes.params import Cursor, Limit, after, next_cursor

router = APIRouter(
    prefix="/api/v1/subscriptions", tags=["subscriptions"], dependencies=[Depends(rate_limited)]
)
SubscriptionId = Annotated[str, Path(pattern=ID_PATTERN.pattern)]
DeliveriesOf = Annotated[
    str,
    Path(
        pattern=f"^({TASK_CALLBACKS_ID}|{ID_PATTERN.pattern[1:-1]})$",
        description=f"a subscription, or `{TASK_CALLBACKS_ID}` for callbacks tasks named",
    ),
]


def definition(tenant: str, subscription_id: str, body: SubscriptionBody) -> defs.Subscription:
    return defs.Subscription(
        id=subscription_id,
        tenant=tenant,
        url=body.url,
        event_types=tuple(body.event_types),
        enabled=body.enabled,
        description=body.description,
    )


def view(stored: Stored[defs.Subscription]) -> Subscription:
    d = stored.definition
    return Subscription(
        id=d.id,
        url=d.url,
        event_types=list(d.event_types),
        enabled=d.enabled,
        description=d.description,
        version=stored.revision,
    )


def signing(gw: Gateway, tenant: str, subscription_id: str) -> SigningSecret:
    return SigningSecret(
        secret=subscription_secret(gw.callback_key, tenant, subscription_id),
        signature_header=defs.SIGNATURE_HEADER,
        timestamp_header=defs.TIMESTAMP_HEADER,
        event_id_header=defs.EVENT_ID_HEADER,
    )


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    summary="Create a subscription",
    responses=problems.responses(403, 409),
)
async def create_subscription(
    body: SubscriptionCreate,
    response: Response,
    principal: Admin,
    gw: GatewayDep,
) -> SubscriptionCreated:
    """Answers the signing secret once: store it; it is not shown again. Each callback is a
    POST of the event's CloudEvents JSON with `X-Zhongshu-Signature: sha256=<hex>` over
    `<timestamp>.<body>`, retried with backoff; see `…/deliveries`."""
    value = definition(principal.tenant, body.id, body)
    revision = await crud.create(gw.subscriptions, principal.tenant, body.id, value)
    await audit(gw, principal, "subscription.created", body.id)
    response.headers["Location"] = f"/api/v1/subscriptions/{body.id}"
    response.headers["Cache-Control"] = "no-store"  # it holds a secret
    created = view(Stored(value, revision))
    return SubscriptionCreated(
        **created.model_dump(), signing=signing(gw, principal.tenant, body.id)
    )


@router.get(
    "",
    response_model=SubscriptionList,
    summary="List subscriptions",
    responses=problems.responses(403),
)
async def list_subscriptions(principal: Admin, gw: GatewayDep) -> SubscriptionList:
    return SubscriptionList(items=[view(s) for s in await gw.subscriptions.list(principal.tenant)])


@router.get(
    "/{subscription_id}",
    response_model=Subscription,
    summary="Get a subscription",
    responses=problems.responses(403, 404),
)
async def get_subscription(
    subscription_id: SubscriptionId,
    principal: Admin,
    gw: GatewayDep,
) -> Subscription:
    return view(await crud.existing(gw.subscriptions, principal.tenant, subscription_id))


@router.put(
    "/{subscription_id}",
    response_model=Subscription,
    summary="Replace a subscription",
    responses=problems.responses(403, 404, 409),
)
async def replace_subscription(
    subscription_id: SubscriptionId,
    body: SubscriptionBody,
    principal: Admin,
    gw: GatewayDep,
) -> Subscription:
    """The secret stays the same (it derives from the id)."""
    value = definition(principal.tenant, subscription_id, body)
    revision = await crud.replace(gw.subscriptions, principal.tenant, subscription_id, value)
    await audit(gw, principal, "subscription.replaced", subscription_id)
    return view(Stored(value, revision))


@router.delete(
    "/{subscription_id}",
    status_code=204,
    summary="Delete a subscription",
    responses=problems.responses(403, 404, 409),
)
async def delete_subscription(
    subscription_id: SubscriptionId,
    principal: Admin,
    gw: GatewayDep,
) -> Response:
    await crud.delete(gw.subscriptions, principal.tenant, subscription_id)
    await audit(gw, principal, "subscription.deleted", subscription_id)
    return Response(status_code=204)


@router.get(
    "/{subscription_id}/deliveries",
    response_model=DeliveryPage,
    response_model_exclude_none=True,
    summary="List a subscription's deliveries",
    responses=problems.responses(403, 404),
)
async def list_deliveries(
    subscription_id: DeliveriesOf,
    principal: Admin,
    gw: GatewayDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> DeliveryPage:
    """Every callback POST that ended (delivered, or failed for good), newest first."""
    if subscription_id != TASK_CALLBACKS_ID:
        await crud.existing(gw.subscriptions, principal.tenant, subscription_id)
    rows = await gw.warm.deliveries(
        principal.tenant, subscription_id, after=after(cursor), limit=limit
    )
    return DeliveryPage(
        items=[Delivery.model_validate(r, from_attributes=False) for r in rows],
        next_cursor=next_cursor(rows, limit, "at", "event_id"),
    )


task_callbacks = APIRouter(
    prefix="/api/v1/task-callbacks", tags=["subscriptions"], dependencies=[Depends(rate_limited)]
)


@task_callbacks.post(
    "/secret",
    response_model=SigningSecret,
    summary="Reveal the secret of task callbacks",
    responses=problems.responses(403),
)
async def task_callback_secret(
    response: Response,
    principal: Admin,
    gw: GatewayDep,
) -> SigningSecret:
    """The tenant's secret for callbacks that tasks name themselves (`deliver_to` with
    `kind: callback`), so their receivers can verify them. Admin only; not cached."""
    response.headers["Cache-Control"] = "no-store"
    await audit(gw, principal, "task_callbacks.secret_revealed", TASK_CALLBACKS_ID)
    return signing(gw, principal.tenant, TASK_CALLBACKS_ID)
