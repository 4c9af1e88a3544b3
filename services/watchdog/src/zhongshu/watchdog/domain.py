"""What the watchdog decides, with no I/O: an alert's lifecycle (raised → acknowledged or silenced
→ resolved), when a finding of a check is raised (again), and how long something has been wrong.

An alert's state is one `AlertRecord` per `alert_key`. Every function here takes the record as
it is stored and returns the record to store and the `AlertStateChanged` to announce (or None):
the caller writes it with compare-and-set and publishes the change under `change_id`, so two
replicas that race apply a transition once, and a retry announces it under the same id."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import (
    AlertActionRequested,
    AlertActor,
    AlertLevel,
    AlertState,
    AlertStateChanged,
    alert_key,
)
from zhongshu.contracts.events.base import AwareDatetime

SOURCE = "watchdog"
OPEN: frozenset[AlertState] = frozenset({"raised", "acknowledged", "silenced"})
STICKY_LABEL = "sticky"
"""A finding that is an event, not a condition (an audit-trail break): it stays open until a
person resolves it."""


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The lifecycle state of one alert, the value of its key in the `alerts` bucket."""

    key: str
    state: AlertState
    level: AlertLevel
    source: str
    title: str
    detail: str = ""
    tenant: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    episode: int = 1
    occurrences: int = 1
    raised_at: AwareDatetime
    last_raised_at: AwareDatetime
    last_raise_id: str = ""
    """The envelope id of the latest AlertRaised counted (a redelivery is not counted twice)."""
    silenced_until: AwareDatetime | None = None
    acknowledged_by: AlertActor | None = None
    resolved_by: AlertActor | None = None
    resolved_at: AwareDatetime | None = None
    reason: str = ""
    hold: bool = False
    """Resolved by a person while its condition still held: not raised again until the
    condition has cleared once."""
    watched: bool = False
    """Raised by one of the watchdog's checks, so it resolves itself when the check clears."""
    transitions: int = 0
    """Counts announced changes: the announcement's id is derived from it."""
    announce: AlertStateChanged | None = None
    """A change stored but not yet known to be published (sent again until it is)."""

    @property
    def open(self) -> bool:
        return self.state in OPEN

    @property
    def sticky(self) -> bool:
        return self.labels.get(STICKY_LABEL) == "true"


@dataclass(frozen=True)
class Decision:
    """What to store (None: nothing changes) and what to announce (None: nothing)."""

    record: AlertRecord | None = None
    change: AlertStateChanged | None = None


NOTHING = Decision()


def change_id(record: AlertRecord) -> str:
    """The Nats-Msg-Id of the record's latest announced change (transitions count on across
    episodes, so the id is unique per key)."""
    return f"alerting:{record.key}:{record.episode}:{record.transitions}"


def _announced(record: AlertRecord, actor: AlertActor | None, reason: str) -> Decision:
    """Store ``record`` as one more transition, and announce it."""
    numbered = msgspec.structs.replace(record, transitions=record.transitions + 1, reason=reason)
    change = AlertStateChanged(
        key=numbered.key,
        state=numbered.state,
        level=numbered.level,
        source=numbered.source,
        title=numbered.title,
        detail=numbered.detail,
        tenant=numbered.tenant,
        labels=numbered.labels,
        actor=actor,
        reason=reason,
        raised_at=numbered.raised_at,
        silenced_until=numbered.silenced_until,
        occurrences=numbered.occurrences,
        episode=numbered.episode,
    )
    return Decision(msgspec.structs.replace(numbered, announce=change), change)


def registered(
    record: AlertRecord | None, alert: AlertRaised, *, raise_id: str, at: datetime
) -> Decision:
    """An `AlertRaised` (anybody's) seen on the bus: a new episode (announced as `raised`), or
    one more occurrence of the open one. A raise after a silence ended brings the alert back to
    `raised`."""
    key = alert_key(alert)
    watched = alert.source == SOURCE and (alert.dedupe_key or "").startswith(f"{SOURCE}:")
    if record is not None and record.last_raise_id == raise_id:
        return NOTHING  # a redelivery
    if record is None or not record.open:
        if record is not None and record.hold:
            return NOTHING  # resolved by a person; its condition has not cleared yet
        if record is not None and record.resolved_at is not None and at <= record.resolved_at:
            return NOTHING  # raised before it was resolved (a late or redelivered raise)
        fresh = AlertRecord(
            key=key,
            state="raised",
            level=alert.level,
            source=alert.source,
            title=alert.title,
            detail=alert.detail,
            tenant=alert.tenant,
            labels=alert.labels,
            episode=record.episode + 1 if record is not None else 1,
            raised_at=at,
            last_raised_at=at,
            last_raise_id=raise_id,
            watched=watched,
            transitions=record.transitions if record is not None else 0,
        )
        # Announced too, so the warm tier and the cards learn the episode from one place.
        return _announced(fresh, None, "raised")
    repeated = msgspec.structs.replace(
        record,
        level=alert.level,
        detail=alert.detail or record.detail,
        labels=alert.labels or record.labels,
        occurrences=record.occurrences + 1,
        last_raised_at=at,
        last_raise_id=raise_id,
    )
    silence_over = record.silenced_until is not None and record.silenced_until <= at
    if record.state == "silenced" and silence_over:
        back = msgspec.structs.replace(repeated, state="raised", silenced_until=None)
        return _announced(back, None, "raised again after the silence ended")
    return Decision(repeated, None)


def acted(record: AlertRecord | None, action: AlertActionRequested, at: datetime) -> Decision:
    """A person's Acknowledge, Silence or Resolve. Acknowledging twice, or acting on a resolved
    alert, changes nothing."""
    if record is None or not record.open:
        return NOTHING
    who = action.actor
    if action.action == "acknowledge":
        if record.state == "acknowledged":
            return NOTHING
        acked = msgspec.structs.replace(
            record, state="acknowledged", acknowledged_by=who, silenced_until=None
        )
        return _announced(acked, who, "acknowledged")
    if action.action == "silence":
        until = at + timedelta(seconds=max(1, action.silence_s))
        silenced = msgspec.structs.replace(record, state="silenced", silenced_until=until)
        return _announced(silenced, who, f"silenced for {_duration(action.silence_s)}")
    resolved = msgspec.structs.replace(
        record,
        state="resolved",
        resolved_by=who,
        resolved_at=at,
        silenced_until=None,
        # Only the watchdog knows when its own conditions clear; anybody else's alert opens a
        # new episode with its next raise.
        hold=record.watched and not record.sticky,
    )
    return _announced(resolved, who, "resolved")


def cleared(record: AlertRecord | None, reason: str, at: datetime) -> Decision:
    """The condition behind a watchdog alert is gone: an open alert resolves itself; a resolved
    one may be raised again."""
    if record is None:
        return NOTHING
    if record.open:
        resolved = msgspec.structs.replace(
            record, state="resolved", resolved_by=None, resolved_at=at, silenced_until=None
        )
        return _announced(resolved, None, reason)
    if record.hold:
        return Decision(msgspec.structs.replace(record, hold=False), None)
    return NOTHING


def announced(record: AlertRecord) -> AlertRecord:
    """The record once its change is published."""
    return msgspec.structs.replace(record, announce=None)


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"


# --- Findings: what the checks see -----------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """Something a check sees wrong now. ``due`` says whether it has lasted long enough (a
    sustained window, a grace period, a count) to be raised; a finding that is present but not
    due keeps an open alert open, and only its absence resolves it."""

    check: str
    """The check and what it looked at: `host.cpu`, `service.down`, `security.signature` …"""
    subject: str
    level: AlertLevel
    title: str
    detail: str
    due: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    occurrence: str = ""
    """For sticky findings: what this detection saw (each is raised once)."""
    sticky: bool = False

    @property
    def dedupe_key(self) -> str:
        return f"{SOURCE}:{self.check}:{self.subject}"

    def alert(self) -> AlertRaised:
        labels = {**self.labels, "check": self.check}
        if self.sticky:
            labels[STICKY_LABEL] = "true"
        return AlertRaised(
            level=self.level,
            source=SOURCE,
            title=self.title,
            detail=self.detail,
            labels=labels,
            dedupe_key=self.dedupe_key,
        )

    @property
    def key(self) -> str:
        return alert_key(self.alert())


def raise_id(finding: Finding, record: AlertRecord | None, at: datetime, remind_s: float) -> str:
    """The Nats-Msg-Id under which a due finding is raised now, or "" when it is not raised:
    once per episode, again after a silence ends, every ``remind_s`` while nobody acknowledged
    it, never while silenced or held (resolved by a person, condition not cleared yet)."""
    key = finding.key
    if finding.sticky:
        silenced = record is not None and record.state == "silenced"
        if silenced and record is not None and (record.silenced_until or at) > at:
            return ""
        return f"{SOURCE}:{key}:{finding.occurrence}"
    if record is None:
        return f"{SOURCE}:{key}:1:raised"
    if not record.open:
        return "" if record.hold else f"{SOURCE}:{key}:{record.episode + 1}:raised"
    if record.state == "silenced":
        until = record.silenced_until
        if until is not None and until > at:
            return ""
        return f"{SOURCE}:{key}:{record.episode}:after:{until.isoformat() if until else ''}"
    reminding = record.state == "raised" and remind_s > 0
    if reminding and (at - record.last_raised_at).total_seconds() >= remind_s:
        return f"{SOURCE}:{key}:{record.episode}:{record.occurrences + 1}"
    return ""


class Sustained:
    """Since when each of a set of things has been wrong without a break."""

    def __init__(self) -> None:
        self._since: dict[str, datetime] = {}

    def update(self, name: str, wrong: bool, at: datetime) -> float:
        """Record one observation; seconds it has been wrong (0 when it is not)."""
        if not wrong:
            self._since.pop(name, None)
            return 0.0
        since = self._since.setdefault(name, at)
        return (at - since).total_seconds()

    def keep_only(self, names: set[str]) -> None:
        """Forget what was not observed (a service gone, a consumer deleted)."""
        for name in set(self._since) - names:
            del self._since[name]


class Growth:
    """A value's samples over a window: whether it grew across the whole window without falling
    below a floor (a consumer's backlog that is not being worked off)."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[datetime, int]]] = {}

    def update(self, name: str, value: int, at: datetime, window_s: float, floor: int) -> bool:
        samples = self._samples.setdefault(name, deque())
        if value < floor:
            samples.clear()
            return False
        samples.append((at, value))
        # Keep the newest sample at least window_s old: the window's start.
        while len(samples) > 1 and (at - samples[1][0]).total_seconds() >= window_s:
            samples.popleft()
        oldest_at, oldest = samples[0]
        return (at - oldest_at).total_seconds() >= window_s and value > oldest

    def keep_only(self, names: set[str]) -> None:
        for name in set(self._samples) - names:
            del self._samples[name]


class Bursts:
    """Refusals per source in a sliding window: the count, bounded in memory (the newest ``cap``
    records per source, each with how many refusals it stands for; at most ``max_sources``
    sources, the quietest forgotten first)."""

    def __init__(self, max_sources: int = 10_000) -> None:
        self._seen: dict[str, deque[tuple[datetime, int]]] = {}
        self._max_sources = max_sources

    def add(self, source: str, at: datetime, cap: int, count: int = 1) -> None:
        cap = max(1, cap)
        seen = self._seen.get(source)
        if seen is None:
            if len(self._seen) >= self._max_sources:
                quietest = min(self._seen, key=lambda s: self._seen[s][-1][0])
                del self._seen[quietest]
            seen = self._seen[source] = deque(maxlen=cap)
        elif seen.maxlen != cap:
            seen = self._seen[source] = deque(seen, maxlen=cap)
        seen.append((at, max(1, count)))

    def counts(self, now: datetime, window_s: float) -> dict[str, int]:
        """Refusals per source within the window; sources with none are forgotten."""
        start = now - timedelta(seconds=window_s)
        out: dict[str, int] = {}
        for source in list(self._seen):
            count = sum(n for at, n in self._seen[source] if at > start)
            if count:
                out[source] = count
            else:
                del self._seen[source]
        return out


# --- The audit trail ---------------------------------------------------------------------------


class TrailMark(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the AUDIT stream held at one check: enough to tell, at the next one, whether
    messages left it other than by its limits."""

    first_seq: int
    last_seq: int
    num_deleted: int
    messages: int
    first_at: AwareDatetime | None = None
    """When the oldest message was stored (None when the stream was empty)."""


def trail_breaks(
    before: TrailMark,
    after: TrailMark,
    *,
    now: datetime,
    max_age_s: float,
    near_byte_cap: bool,
    slack_s: float = 60.0,
) -> list[str]:
    """Why the audit trail lost messages between two checks ([] when it did not).

    A stream's limits only ever remove its oldest messages: by age (`max_age`) or to make room
    (`max_bytes`, `discard: old`). So three things are a break: the last sequence going back (the
    stream was deleted and created again, or purged to a lower sequence); messages deleted from
    the middle (`num_deleted` grew: only a delete request does that); and the oldest messages
    going while the oldest one was not yet `max_age` old and the stream was not near its byte
    cap (a purge, or deleting from the front)."""
    problems = []
    if after.last_seq < before.last_seq:
        problems.append(
            f"the last sequence went back from {before.last_seq} to {after.last_seq} "
            "(the stream was deleted or purged and created again)"
        )
        return problems
    if after.num_deleted > before.num_deleted:
        problems.append(
            f"{after.num_deleted - before.num_deleted} message(s) deleted from the middle "
            f"(sequences {before.first_seq}–{after.last_seq})"
        )
    if after.first_seq > before.first_seq and before.messages > 0:
        expiring = (
            max_age_s > 0
            and before.first_at is not None
            and (now - before.first_at).total_seconds() >= max_age_s - slack_s
        )
        if not expiring and not near_byte_cap:
            problems.append(
                f"messages {before.first_seq}–{after.first_seq - 1} removed from the front while "
                "the oldest was younger than max_age and the stream was far from its byte cap"
            )
    return problems
