"""What the projector exports on ``/metrics`` besides the runtime's consumer metrics: how far each
read model is behind its stream, and what it writes."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge

ROWS_WRITTEN = Counter(
    "zhongshu_projector_rows_written_total",
    "Rows inserted or updated in the warm tier (a replayed message writes none)",
    ("table",),
)
ROWS_PRUNED = Counter(
    "zhongshu_projector_rows_pruned_total",
    "Rows deleted by warm-tier retention (ZHONGSHU_WARM_RETENTION_MONTHS)",
    ("table",),
)
APPLIED_SEQ = Gauge(
    "zhongshu_projector_applied_sequence",
    "Last stream sequence (KV revision) applied to the read models",
    ("stream",),
)
STREAM_LAST_SEQ = Gauge(
    "zhongshu_projector_stream_last_sequence", "Last sequence stored in the stream", ("stream",)
)
LAG = Gauge(
    "zhongshu_projector_lag",
    "Stream's last sequence minus the last one applied (0 once every message the projector "
    "reads is applied)",
    ("stream",),
)
HOT_WRITES = Counter(
    "zhongshu_projector_hot_writes_total",
    "Task statuses written to Redis (written), or given up on after retries (failed)",
    ("outcome",),
)
WRITE_RETRIES = Counter(
    "zhongshu_projector_write_retries_total",
    "Writes retried in place after a transient PostgreSQL error",
    ("what",),
)


def record_applied(stream: str, seq: int, rows: Mapping[str, int]) -> None:
    APPLIED_SEQ.labels(stream).set(seq)
    for table, count in rows.items():
        if count:
            ROWS_WRITTEN.labels(table).inc(count)
