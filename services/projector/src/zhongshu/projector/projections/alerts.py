"""ALERTS (``alert.<level>.<source>``, ``alerting.state.<key>``) → ``alerts`` (each alert key and
episode as its latest lifecycle change says: state, who acknowledged or resolved it, how often it
was raised) and ``alert_events`` (every raise and every change with its actor, keyed by stream
sequence). The watchdog decides the lifecycle; this only records it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import AlertStateChanged, alert_key
from zhongshu.projector.projections import Applied, Projection, written
from zhongshu.projector.records import Record, decode_known, to_json

EVENT = """
INSERT INTO alert_events (stream_seq, key, episode, kind, state, level, source, title, actor_id,
                          actor_name, actor_platform, actor_app, reason, data, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15)
ON CONFLICT (stream_seq) DO NOTHING
"""

STATE = """
INSERT INTO alerts AS a (key, episode, state, level, source, title, detail, tenant, labels,
                         raised_at, occurrences, silenced_until, acknowledged_by, acknowledged_at,
                         resolved_by, resolved_at, reason, updated_at, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19)
ON CONFLICT (key, episode) DO UPDATE SET
    state = EXCLUDED.state,
    level = EXCLUDED.level,
    title = EXCLUDED.title,
    detail = EXCLUDED.detail,
    tenant = EXCLUDED.tenant,
    labels = EXCLUDED.labels,
    raised_at = COALESCE(EXCLUDED.raised_at, a.raised_at),
    occurrences = GREATEST(EXCLUDED.occurrences, a.occurrences),
    silenced_until = EXCLUDED.silenced_until,
    acknowledged_by = COALESCE(EXCLUDED.acknowledged_by, a.acknowledged_by),
    acknowledged_at = COALESCE(EXCLUDED.acknowledged_at, a.acknowledged_at),
    resolved_by = COALESCE(EXCLUDED.resolved_by, a.resolved_by),
    resolved_at = COALESCE(EXCLUDED.resolved_at, a.resolved_at),
    reason = EXCLUDED.reason,
    updated_at = EXCLUDED.updated_at,
    last_seq = EXCLUDED.last_seq
WHERE a.last_seq < EXCLUDED.last_seq
"""

REPEAT = """
UPDATE alerts SET occurrences = occurrences + 1, last_seq = $2
WHERE key = $1 AND state <> 'resolved' AND last_seq < $2
"""

AUTOMATIC = "watchdog"
"""Who resolved an alert whose condition cleared (the change has no actor)."""


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One statement: ``sql`` with its arguments, and the table it writes."""

    table: str
    sql: str
    args: tuple[Any, ...]


def plan(record: Record) -> list[AlertChange]:
    env = decode_known(record)
    if env is None:
        return []
    event, seq, at = env.data, record.seq, env.time
    if isinstance(event, AlertRaised):
        key = alert_key(event)
        row = (
            seq, key, None, "raise", None, event.level, event.source, event.title,
            None, None, None, None, event.detail, to_json(event), at,
        )  # fmt: skip
        return [AlertChange("alert_events", EVENT, row), AlertChange("alerts", REPEAT, (key, seq))]
    if isinstance(event, AlertStateChanged):
        return [
            AlertChange("alert_events", EVENT, _event_row(event, seq, at)),
            AlertChange("alerts", STATE, _state_row(event, seq, at)),
        ]
    return []


def _event_row(event: AlertStateChanged, seq: int, at: datetime) -> tuple[Any, ...]:
    actor = event.actor
    return (
        seq, event.key, event.episode, "change", event.state, event.level, event.source,
        event.title, actor.id if actor else None, actor.name if actor else None,
        actor.platform if actor else None, actor.app if actor else None, event.reason,
        to_json(event), at,
    )  # fmt: skip


def _state_row(event: AlertStateChanged, seq: int, at: datetime) -> tuple[Any, ...]:
    actor_id = event.actor.id if event.actor else None
    acknowledged = event.state == "acknowledged"
    resolved = event.state == "resolved"
    return (
        event.key, event.episode, event.state, event.level, event.source, event.title,
        event.detail, event.tenant, to_json(event.labels), event.raised_at, event.occurrences,
        event.silenced_until,
        actor_id if acknowledged else None, at if acknowledged else None,
        (actor_id or AUTOMATIC) if resolved else None, at if resolved else None,
        event.reason, at, seq,
    )  # fmt: skip


class AlertsProjection(Projection[AlertChange]):
    stream: ClassVar[str] = streams.ALERTS.name
    durable: ClassVar[str] = "projector-alerts"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_ALERTS, subjects.ALL_ALERT_STATES)
    tables: ClassVar[tuple[str, ...]] = ("alerts", "alert_events")

    def plan(self, record: Record) -> list[AlertChange]:
        return plan(record)

    async def apply(self, conn: asyncpg.Connection, change: AlertChange, applied: Applied) -> None:
        """One statement per change, in stream order (alerts are rare; a repeat must count on the
        episode its preceding change opened)."""
        applied.rows[change.table] += written(await conn.execute(change.sql, *change.args))
