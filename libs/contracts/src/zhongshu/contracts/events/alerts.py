"""Alerts: something an operator should look at, at one of three levels, and its lifecycle.

An alert is identified by its `alert_key` (from its dedupe key, else its source and title): every
`AlertRaised` with the same key is the same ongoing problem. Its lifecycle is
raised → acknowledged (or silenced) → resolved; the watchdog owns that state, applies the
actions people take from chat (`AlertActionRequested`, published by the router after a card
click) and announces each change (`AlertStateChanged`), which the notifier shows by updating the
alert's card in place and the projector keeps in the warm tier.
"""

import hashlib
from datetime import datetime
from typing import ClassVar, Literal

import msgspec

from zhongshu.contracts.events.base import AwareDatetime, Event

AlertLevel = Literal["warning", "error", "critical"]
AlertState = Literal["raised", "acknowledged", "silenced", "resolved"]
AlertAction = Literal["acknowledge", "silence", "resolve"]

ALERT_ACTIONS: tuple[AlertAction, ...] = ("acknowledge", "silence", "resolve")
DEFAULT_SILENCE_S = 3600
"""What the card's "Silence 1 h" button asks for."""

CARD_VALUE_KEY = "zhongshu_alert"
"""A card button whose value holds this key (`{"zhongshu_alert": <alert_key>, "op": <action>}`)
is an alert action; the router handles it before any other card rule."""


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


def alert_key(alert: AlertRaised) -> str:
    """The alert's identity: a short, subject-safe hash of its dedupe key (else source + title).
    The same for every repeat of one problem, so card buttons, the watchdog's state and the
    notifier's cards all name it the same way."""
    basis = alert.dedupe_key or f"{alert.source}\x1f{alert.title}"
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class AlertActor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who acted on an alert: a chat user (platform, app, user id and name), or a component
    (`platform` empty, `id` = e.g. `watchdog`) when the alert resolved itself."""

    id: str
    name: str = ""
    platform: str = ""
    app: str = ""


class AlertActionRequested(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Someone allowed to (an admin of the app the card came from) pressed an alert card's
    button. Published by the router on `alerting.action.<key>`; applied by the watchdog."""

    TYPE: ClassVar[str] = "zhongshu.alert.alert_action_requested.v1"

    key: str
    action: AlertAction
    actor: AlertActor
    silence_s: int = DEFAULT_SILENCE_S
    """For `silence`: how long repeats stay quiet."""
    tenant: str | None = None
    chat_id: str | None = None
    message_id: str | None = None
    """The platform message holding the clicked card."""


class AlertStateChanged(Event, frozen=True, kw_only=True, omit_defaults=True):
    """An alert moved in its lifecycle. Published by the watchdog on `alerting.state.<key>`
    once per transition (a second Acknowledge is no transition and publishes nothing): `raised`
    when a new episode opens (its first raise, or one after it was resolved) and when a raise
    comes after a silence ended, then `acknowledged`, `silenced`, `resolved`. Carries what a card
    needs to be redrawn without looking anything up."""

    TYPE: ClassVar[str] = "zhongshu.alert.alert_state_changed.v1"

    key: str
    state: AlertState
    level: AlertLevel
    source: str
    title: str
    detail: str = ""
    tenant: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    actor: AlertActor | None = None
    """Who made the change; absent when the watchdog resolved it because the condition cleared."""
    reason: str = ""
    raised_at: AwareDatetime | None = None
    silenced_until: AwareDatetime | None = None
    occurrences: int = 1
    """How many times it was raised in this episode."""
    episode: int = 1
    """Counts the times this key was raised anew after being resolved."""


def silence_ends(changed: AlertStateChanged) -> datetime | None:
    """When a silence ends (None when the alert is not silenced)."""
    return changed.silenced_until if changed.state == "silenced" else None
