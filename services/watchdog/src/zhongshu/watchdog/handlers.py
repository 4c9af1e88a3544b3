"""The watchdog's consumers: every alert raised (its lifecycle starts or repeats), the actions
people take from alert cards, and the security audit records it counts bursts in."""

from __future__ import annotations

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AlertRaised, AuditRecorded
from zhongshu.contracts.events.alerts import AlertActionRequested
from zhongshu.runtime import Delivery
from zhongshu.watchdog import lifecycle
from zhongshu.watchdog.resources import WatchdogDeps, WatchdogService


def register(service: WatchdogService) -> None:
    @service.consumes(
        stream=streams.ALERTS.name,
        subjects=subjects.ALL_ALERTS,
        durable="watchdog-alerts",
        event=AlertRaised,
    )
    async def on_alert(deps: WatchdogDeps, env: Envelope[AlertRaised], delivery: Delivery) -> None:
        await lifecycle.register(deps.book, env)

    @service.consumes(
        stream=streams.ALERTS.name,
        subjects=subjects.ALL_ALERT_ACTIONS,
        durable="watchdog-actions",
        event=AlertActionRequested,
    )
    async def on_action(
        deps: WatchdogDeps, env: Envelope[AlertActionRequested], delivery: Delivery
    ) -> None:
        await lifecycle.act(deps.book, env)

    @service.consumes(
        stream=streams.AUDIT.name,
        subjects=subjects.audits_of("security"),
        durable="watchdog-security",
        event=AuditRecorded,
    )
    async def on_security(
        deps: WatchdogDeps, env: Envelope[AuditRecorded], delivery: Delivery
    ) -> None:
        deps.security.record(env.data, env.time, deps.config.current.watchdog)
