"""Prometheus metrics every consumer exports (served on the side port's ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("service", "consumer")

HANDLED = Counter("zhongshu_messages_handled_total", "Messages handled and acked", LABELS)
FAILED = Counter(
    "zhongshu_messages_failed_total",
    "Handler attempts that failed (each redelivery counts)",
    LABELS,
)
DEAD_LETTERED = Counter("zhongshu_messages_dead_lettered_total", "Messages sent to the DLQ", LABELS)
DUPLICATES = Counter(
    "zhongshu_messages_duplicate_total",
    "Late stored copies of an event already claimed by another copy: acked without output",
    LABELS,
)
HANDLER_SECONDS = Histogram(
    "zhongshu_handler_seconds",
    "Time from fetch to ack for one message",
    LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_PENDING = Gauge(
    "zhongshu_consumer_pending", "Messages in the stream not yet delivered to the consumer", LABELS
)
CONSUMER_ACK_PENDING = Gauge(
    "zhongshu_consumer_ack_pending", "Messages delivered and not yet acked", LABELS
)
