"""What the routes share in one process: the adapters opened at start-up. Kept on the FastAPI
app's state (the side port runs no ASGI lifespan; the service's start-up hook fills it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from zhongshu.contracts.definitions import Subscription, TriggerDefinition, WorkflowDefinition
from zhongshu.gateway.adapters.audit import AuditTrail
from zhongshu.gateway.adapters.definitions import DefinitionStore
from zhongshu.gateway.adapters.hottier import HotTier
from zhongshu.gateway.adapters.schedules import ScheduleStore
from zhongshu.gateway.adapters.warmtier import WarmTier
from zhongshu.gateway.auth import Principal, TokenVerifier
from zhongshu.gateway.quotas import FlowControl
from zhongshu.gateway.submission import TaskDesk


@dataclass
class Gateway:
    tokens: TokenVerifier
    flow: FlowControl
    desk: TaskDesk
    hot: HotTier
    warm: WarmTier
    schedules: ScheduleStore
    workflows: DefinitionStore[WorkflowDefinition]
    triggers: DefinitionStore[TriggerDefinition]
    subscriptions: DefinitionStore[Subscription]
    audit: AuditTrail
    callback_key: bytes
    max_body_bytes: int


def gateway(request: Request) -> Gateway:
    """A dependency: the process's adapters (503 until start-up has opened them)."""
    found = getattr(request.app.state, "gateway", None)
    if not isinstance(found, Gateway):
        from zhongshu.gateway.problems import ProblemError

        raise ProblemError(503, "the gateway is starting", kind="unavailable")
    return found


GatewayDep = Annotated[Gateway, Depends(gateway)]


async def audit(gw: Gateway, principal: Principal, action: str, target: str) -> None:
    """Record a change an API client made (`<resource>.<past participle>`)."""
    await gw.audit.record(
        tenant=principal.tenant,
        actor=principal.requested_by,
        token=principal.token_id,
        action=action,
        target=target,
    )
