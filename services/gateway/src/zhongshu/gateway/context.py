"""What the routes share in one process: the adapters the service's lifespan opened
(``resources.py``), the :class:`Gateway` it yields. The side port runs no ASGI lifespan, so the
app is given the service's ``deps`` to ask for it (``build_app``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from nats.js.kv import KeyValue
from redis.asyncio import Redis

from zhongshu.contracts.definitions import Subscription, TriggerDefinition, WorkflowDefinition
from zhongshu.gateway.adapters.audit import AuditTrail
from zhongshu.gateway.adapters.definitions import DefinitionStore
from zhongshu.gateway.adapters.hottier import HotTier
from zhongshu.gateway.adapters.schedules import ScheduleStore
from zhongshu.gateway.adapters.warmtier import WarmTier
from zhongshu.gateway.auth import Principal, TokenVerifier
from zhongshu.gateway.problems import ProblemError
from zhongshu.gateway.quotas import FlowControl
from zhongshu.gateway.submission import TaskDesk
from zhongshu.runtime.errors import RuntimeFailure
from zhongshu.runtime.grants import GrantStore
from zhongshu.runtime.revocations import RevokedTokens


@dataclass(frozen=True)
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
    grants: GrantStore
    revoked: RevokedTokens
    """Revoked token ids, watched: checked on every request without I/O."""
    revoked_kv: KeyValue
    callback_key: bytes
    max_body_bytes: int
    redis: Redis  # the client behind hot, flow and desk (readiness pings it)


def gateway(request: Request) -> Gateway:
    """A dependency: the process's adapters (503 while the service is not started)."""
    deps: Callable[[], Gateway] = request.app.state.deps
    try:
        return deps()
    except RuntimeFailure:
        raise ProblemError(503, "the gateway is starting", kind="unavailable") from None


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
