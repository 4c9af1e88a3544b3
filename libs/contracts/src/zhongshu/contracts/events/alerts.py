"""Alerts: something an operator should look at, at one of three levels."""

from typing import ClassVar, Literal

import msgspec

from zhongshu.contracts.events.base import Event

AlertLevel = Literal["warning", "error", "critical"]


class AlertRaised(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Something needs an operator's attention.

    Published on `alert.<level>.<source>` by the watchdog (resources above 70 %, a service down,
    security events), by the router (alert-classified chat messages), by any consumer that
    dead-letters a message, and by other teams. The notifier sends it to the chats configured
    for its level.
    """

    TYPE: ClassVar[str] = "zhongshu.alert.alert_raised.v1"

    level: AlertLevel
    source: str
    """What raised it: a service name, a team, a host."""
    title: str
    detail: str = ""
    tenant: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    dedupe_key: str | None = None
    """Alerts with the same key describe one ongoing problem; the notifier may fold repeats."""
