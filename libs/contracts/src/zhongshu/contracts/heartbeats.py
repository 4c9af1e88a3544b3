"""What every service instance says about itself every few seconds, in the `heartbeats` bucket.

The key is `<service>.<instance>` (`heartbeat_key`); a graceful stop deletes it, so a key that
stops changing means a process that died or hangs. The watchdog reads the bucket to tell a
service down, unready, burning CPU or reporting a failing condition (the LLM provider, a
platform refusing our credentials)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from zhongshu.contracts.events.base import AwareDatetime
from zhongshu.contracts.subjects import sanitize_token


class ConditionState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing a service depends on, as it last saw it: `ok`, and since when it has been so."""

    ok: bool
    since: AwareDatetime
    detail: str = ""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One instance of a service, as of `at` (its own clock; the bucket's write time is the
    reference the watchdog uses for freshness)."""

    service: str
    instance: str
    pid: int
    host: str
    version: str
    started_at: AwareDatetime
    at: AwareDatetime
    interval_s: float
    """How often it beats: a reader treats a few missed beats as a dead process."""
    ready: bool
    checks: dict[str, bool] = msgspec.field(default_factory=dict)
    """Its readiness checks, as `/readyz` reports them."""
    cpu_percent: float = 0.0
    """Process CPU since the previous beat, in % of one core (above 100 on several cores)."""
    rss_bytes: int = 0
    conditions: dict[str, ConditionState] = msgspec.field(default_factory=dict)


def heartbeat_key(service: str, instance: str) -> str:
    """`<service>.<instance>`, each a subject-safe token (KV keys are subjects)."""
    return f"{sanitize_token(service)}.{sanitize_token(instance)}"


def since_ok(condition: ConditionState, now: datetime) -> float:
    """Seconds the condition has been failing (0 when it is ok)."""
    return 0.0 if condition.ok else max(0.0, (now - condition.since).total_seconds())
