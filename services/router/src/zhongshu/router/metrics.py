"""The router's own Prometheus counters (served on the side port's ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

RATE_LIMITED = Counter(
    "zhongshu_router_rate_limited_total",
    "Inbound events refused by a rate limit, by the limit that refused them",
    ("scope",),
)
ROUTED = Counter(
    "zhongshu_router_routed_total",
    "Inbound events by what the router did with them",
    ("outcome",),
)
DEPARTMENT_LOOKUPS = Counter(
    "zhongshu_router_department_lookups_total",
    "Department look-ups for the whitelist, by platform and outcome (cached, found, "
    "unknown_user, no_user_id; failures: rate_limited, unreachable, credentials, error)",
    ("platform", "outcome"),
)
