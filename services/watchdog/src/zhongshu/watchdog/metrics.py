"""The watchdog's Prometheus metrics (served on the side port's ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ALERTS_ACTIVE = Gauge(
    "zhongshu_alerts_active",
    "Open alerts (raised, acknowledged or silenced), anybody's, by level",
    ("level",),
)
CHECKS = Counter(
    "zhongshu_watchdog_checks_total",
    "Check runs by check family and outcome (ok, failed)",
    ("check", "outcome"),
)
RAISED = Counter(
    "zhongshu_watchdog_alerts_raised_total",
    "AlertRaised published by the watchdog's checks (first raises, reminders, after silences)",
    ("level",),
)
TRANSITIONS = Counter(
    "zhongshu_watchdog_transitions_total",
    "Alert lifecycle changes announced, by new state",
    ("state",),
)
