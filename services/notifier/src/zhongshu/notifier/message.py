"""What the notifier sends, independent of the platform: the adapters render it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

AlertColour = Literal["yellow", "orange", "red", "green", "grey"]
ButtonStyle = Literal["default", "primary", "danger"]


@dataclass(frozen=True)
class CardAction:
    """A button that calls back: the platform posts ``value`` to the ingress when it is
    clicked (Feishu ``card.action.trigger``, DingTalk's card callback)."""

    label: str
    value: dict[str, str]
    style: ButtonStyle = "default"


@dataclass(frozen=True)
class Outgoing:
    kind: Literal["text", "markdown", "card"]
    text: str = ""
    title: str | None = None
    card: dict[str, Any] | None = None
    """A platform card as given by the producer (sent as is)."""
    mention_user_ids: tuple[str, ...] = ()
    idempotency_key: str | None = None
    """Sent as Feishu's request ``uuid``; a DingTalk card's ``outTrackId``; DingTalk messages
    have no such field."""
    colour: AlertColour | None = None
    """Set for alert cards: the header colour."""
    buttons: tuple[tuple[str, str], ...] = field(default=())
    """Link buttons: (label, URL)."""
    actions: tuple[CardAction, ...] = field(default=())
    """Callback buttons (alert cards sent through an app, which can receive the callback)."""
