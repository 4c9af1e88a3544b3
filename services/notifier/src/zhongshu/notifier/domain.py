"""What the notifier decides, with no I/O: delivery-record transitions, output ids, splitting
over-long text, and how an alert reads."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

import msgspec

from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import (
    CARD_VALUE_KEY,
    AlertAction,
    AlertActor,
    AlertStateChanged,
    alert_key,
)
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.notifier.message import AlertColour, ButtonStyle, CardAction, Outgoing

RecordState = Literal["pending", "sending", "delivered", "failed", "ambiguous"]
TERMINAL: frozenset[str] = frozenset({"delivered", "failed", "ambiguous"})


class DeliveryRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The value of one key of the ``delivery_state`` bucket."""

    state: RecordState
    attempts: int = 0
    sent_chars: int = 0
    """How much of the text already went out (over-long text is sent in parts)."""
    platform_message_id: str | None = None
    card_id: str | None = None
    """The streaming card of a streamed reply (created before the message that shows it)."""
    reason: str | None = None
    code: str | None = None
    at: datetime | None = None
    claimed_at: datetime | None = None
    """When the last ``sending`` was written: a ``sending`` record this young may belong to a
    worker that is still waiting for the platform's answer, not to one that died."""
    finished: bool = False
    """A streamed reply's record (the card's): its final chunk was handled, and ``state``,
    ``reason`` and ``code`` are the final text's outcome (``delivered`` before it: the card
    is shown)."""


Step = Literal["send", "republish", "mark_ambiguous", "wait"]


def next_step(
    record: DeliveryRecord,
    *,
    idempotent: bool,
    now: datetime | None = None,
    in_flight_s: float = 0.0,
) -> Step:
    """What a (re)delivered message does with the record it finds.

    ``sending`` means a worker crashed, or stalled past ``ack_wait``, between claiming the send
    and recording its outcome: the platform may or may not have the message. Only a platform
    that deduplicates the request (Feishu's ``uuid``) may be asked again. A ``sending`` claimed
    less than ``in_flight_s`` ago may still be waiting for the platform's answer (the chunks
    of a streamed reply share the record of their card): ``wait`` for it to be recorded, on
    every platform, since sending again while the first send is in flight is a re-send without
    any fault, even where the platform absorbs it."""
    if record.state in TERMINAL:
        return "republish"
    if record.state == "sending":
        if in_flight(record, now=now, in_flight_s=in_flight_s):
            return "wait"
        return "send" if idempotent else "mark_ambiguous"
    return "send"


def in_flight(record: DeliveryRecord, *, now: datetime | None, in_flight_s: float) -> bool:
    """A ``sending`` record young enough that its worker may still await the platform."""
    claimed = record.claimed_at
    return (
        record.state == "sending"
        and now is not None
        and claimed is not None
        and now - claimed < timedelta(seconds=in_flight_s)
    )


def record_key(*parts: str) -> str:
    """A KV key for any id (ids may hold ``:`` and other characters keys may not)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


def outcome_id(reply_id: str, chunk_index: int, state: str) -> str:
    """The envelope id of what the notifier publishes about one reply chunk: the same on every
    redelivery, so JetStream and the projector drop the copy."""
    return derive_msg_id(reply_id, f"delivery.{chunk_index}.{state}")


def split_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` bytes, cut at the last newline when
    there is one in the second half (so paragraphs stay whole)."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    head = data[:max_bytes].decode("utf-8", errors="ignore")
    newline = head.rfind("\n")
    if newline >= len(head) // 2:
        head = head[: newline + 1]
    return head or text[:1]


def parts(text: str, max_bytes: int) -> list[str]:
    out: list[str] = []
    while text:
        part = split_utf8(text, max_bytes)
        out.append(part)
        text = text[len(part) :]
    return out or [""]


# --- alerts ---------------------------------------------------------------------------------------

COLOURS: dict[str, AlertColour] = {"warning": "yellow", "error": "orange", "critical": "red"}

# (action, label, style): the buttons of an alert card, in the order they are shown.
ALERT_BUTTONS: tuple[tuple[AlertAction, str, ButtonStyle], ...] = (
    ("acknowledge", "Acknowledge", "primary"),
    ("silence", "Silence 1 h", "default"),
    ("resolve", "Resolve", "danger"),
)
# The buttons that still mean something in each state (a resolved alert has none).
BUTTONS_IN_STATE: dict[str, frozenset[str]] = {
    "raised": frozenset({"acknowledge", "silence", "resolve"}),
    "acknowledged": frozenset({"silence", "resolve"}),
    "silenced": frozenset({"acknowledge", "resolve"}),
    "resolved": frozenset(),
}


def fold_key(alert: AlertRaised) -> str:
    """Alerts with the same key are one ongoing problem: its dedupe key, else source + title."""
    return alert.dedupe_key or f"{alert.source}\x1f{alert.title}"


def alert_actions(key: str, state: str) -> tuple[CardAction, ...]:
    """The callback buttons of alert ``key`` in ``state``: each value names the alert and the
    action (``{CARD_VALUE_KEY: key, "op": action}``), which the router turns into an
    ``AlertActionRequested``."""
    shown = BUTTONS_IN_STATE.get(state, frozenset())
    return tuple(
        CardAction(label, {CARD_VALUE_KEY: key, "op": action}, style)
        for action, label, style in ALERT_BUTTONS
        if action in shown
    )


def _who(actor: AlertActor | None) -> str:
    return (actor.name or actor.id) if actor is not None else ""


def _clock(at: datetime, zone: tzinfo) -> str:
    return at.astimezone(zone).strftime("%H:%M %Z").strip()


def status_line(changed: AlertStateChanged, at: datetime, zone: tzinfo = UTC) -> str:
    """What the card says about the alert's state: who did what, when (``at``: when the state
    changed, in ``zone``)."""
    who, when = _who(changed.actor), _clock(at, zone)
    if changed.state == "acknowledged":
        return f"Acknowledged by {who} at {when}" if who else f"Acknowledged at {when}"
    if changed.state == "silenced":
        until = _clock(changed.silenced_until, zone) if changed.silenced_until else "further notice"
        return f"Silenced until {until}" + (f" by {who}" if who else "")
    if changed.state == "resolved":
        if changed.actor is None or not who or not changed.actor.platform:
            return f"Resolved automatically: {changed.reason or 'condition cleared'}"
        return f"Resolved by {who} at {when}"
    return ""


def alert_message(
    alert: AlertRaised | AlertStateChanged,
    *,
    repeats: int = 0,
    window_s: float = 0,
    state: str = "raised",
    status: str = "",
    buttons: bool = True,
) -> Outgoing:
    """An alert as a card whose header colour says the level; ``repeats`` folds the copies seen
    within the window into one line; ``status`` says who acknowledged, silenced or resolved
    it; ``buttons`` puts the callback buttons that still apply in ``state`` under it (only
    where a click can come back: cards sent through an app)."""
    key = alert.key if isinstance(alert, AlertStateChanged) else alert_key(alert)
    lines = [alert.detail] if alert.detail else []
    lines.append(f"**source** {alert.source} · **level** {alert.level}")
    if alert.tenant:
        lines.append(f"**tenant** {alert.tenant}")
    for name, value in sorted(alert.labels.items()):
        lines.append(f"**{name}** {value}")
    if repeats:
        lines.append(f"**repeated {repeats} more time(s) in the last {window_s:.0f} s**")
    if status:
        lines.append(f"**{status}**")
    title = f"[{alert.level.upper()}] {alert.title}"
    if repeats:
        title += f" (×{repeats + 1})"
    colour: AlertColour = "green" if state == "resolved" else COLOURS[alert.level]
    return Outgoing(
        kind="card",
        text="\n\n".join(lines),
        title=title,
        colour=colour,
        actions=alert_actions(key, state) if buttons else (),
    )


def silenced(state: str, until: datetime | None, now: datetime) -> bool:
    """Whether repeats of an alert are held back: silenced, and the silence not over."""
    return state == "silenced" and until is not None and now < until
