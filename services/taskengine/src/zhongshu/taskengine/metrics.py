"""The engine's own Prometheus metrics (served on the side port's ``/metrics``), next to the
runtime's per-consumer ones. No tenant or run labels: they would grow without bound."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRIGGERS_FIRED = Counter(
    "zhongshu_taskengine_triggers_fired_total", "Tasks created by event triggers"
)
EVENTS_SKIPPED = Counter(
    "zhongshu_taskengine_events_skipped_total",
    "Events or trigger evaluations skipped, by why",
    ("reason",),
)
RUNS_ENDED = Counter(
    "zhongshu_taskengine_runs_ended_total",
    "Workflow runs that completed, failed, or were refused at the start",
    ("outcome",),
)
STEP_ATTEMPTS = Counter(
    "zhongshu_taskengine_step_attempts_total",
    "Step attempts by kind and outcome (completed, failed, retried, handed_off)",
    ("kind", "outcome"),
)
STEP_SECONDS = Histogram(
    "zhongshu_taskengine_step_seconds",
    "Time one step attempt took in its worker (infer: until the agent's task was requested)",
    ("kind",),
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
