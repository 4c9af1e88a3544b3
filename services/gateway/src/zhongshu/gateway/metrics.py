"""The gateway's Prometheus metrics (served on `/metrics` next to the API)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "zhongshu_gateway_requests_total",
    "API requests answered, by route template and status (401/403/429 show refusals)",
    ("method", "route", "status"),
)
LATENCY = Histogram(
    "zhongshu_gateway_request_seconds",
    "Time to answer an API request",
    ("method", "route"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TASKS_ACCEPTED = Counter(
    "zhongshu_gateway_tasks_accepted_total",
    "Tasks put on the bus (replays of an Idempotency-Key not counted)",
    ("kind",),
)
