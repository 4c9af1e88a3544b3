"""The archiver's Prometheus metrics (served on the side port's ``/metrics``), per stream."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("stream",)

ARCHIVED_EVENTS = Counter(
    "zhongshu_archiver_events_total", "Messages written to the archive", LABELS
)
ARCHIVED_OBJECTS = Counter(
    "zhongshu_archiver_objects_total", "Objects written (one per chunk and month)", LABELS
)
STORED_BYTES = Counter(
    "zhongshu_archiver_stored_bytes_total", "Compressed bytes written to the store", LABELS
)
RAW_BYTES = Counter(
    "zhongshu_archiver_raw_bytes_total", "JSON Lines bytes before compression", LABELS
)
LOST_EVENTS = Counter(
    "zhongshu_archiver_lost_events_total",
    "Messages that left the stream (max_age, max_bytes) before they were archived",
    LABELS,
)
COMMIT_SECONDS = Histogram(
    "zhongshu_archiver_commit_seconds",
    "Time to write one chunk: objects, manifests, resume point",
    LABELS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ARCHIVED_SEQ = Gauge(
    "zhongshu_archiver_archived_sequence", "Last stream sequence in the archive", LABELS
)
LAG_MESSAGES = Gauge(
    "zhongshu_archiver_lag_messages", "Messages in the stream not yet archived", LABELS
)
LAG_SECONDS = Gauge(
    "zhongshu_archiver_lag_seconds", "Age of the oldest message not yet archived", LABELS
)
RETENTION_USED = Gauge(
    "zhongshu_archiver_retention_used_ratio",
    "How close the oldest unarchived message is to leaving the stream: its age over max_age "
    "(or the unarchived share of max_bytes / max_msgs, whichever is higher); 1 = it is lost",
    LABELS,
)
