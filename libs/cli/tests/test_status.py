"""``zhongshu status`` reads in an 80-column terminal: nothing cut to an ellipsis, no line wider
than the terminal, and KV watchers summed instead of listed by their random names."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from zhongshu.cli.status import (
    ConsumerStatus,
    ServiceStatus,
    StreamStatus,
    consumer_rows,
    consumers_table,
    services_table,
    streams_table,
    uptime,
)

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


def _consumer(name: str, *, pending: int = 0, durable: bool = True) -> ConsumerStatus:
    return ConsumerStatus(
        name=name, pending=pending, ack_pending=3, redelivered=12, waiting=1, durable=durable
    )


# The widest names the hub has today, with six-digit counters.
STREAMS = [
    StreamStatus(
        name="CHAT_COMMANDS",
        messages=1_234_567,
        bytes=3 * 1024**3,
        first_seq=1_000_001,
        last_seq=2_234_567,
        consumers=[
            _consumer("agent-commands", pending=104_857),
            _consumer("archiver-CHAT_COMMANDS"),
        ],
    ),
    StreamStatus(
        name="KV_delivery_state",
        messages=12,
        bytes=1600,
        first_seq=1,
        last_seq=12,
        consumers=[_consumer(f"Ai4HO0P{i}", durable=False) for i in range(6)],
    ),
    StreamStatus(
        name="TASKS",
        messages=0,
        bytes=0,
        first_seq=0,
        last_seq=0,
        consumers=[_consumer("notifier-callback-targets"), _consumer("taskengine-workflows")],
    ),
]
SERVICES = [
    ServiceStatus(
        name="ingress-dingtalk",
        pid=4_194_303,
        health_port=65_535,
        restarts=12,
        started_at="2026-12-04T09:30:00+00:00",
        ready=False,
        detail="not ready: nats, redis, postgres, config, stream lease for acme-dingtalk",
    ),
    ServiceStatus(
        name="router",
        pid=None,
        health_port=50_937,
        restarts=0,
        started_at=None,
        ready=False,
        detail="not running (restarting)",
    ),
]


def _render(table: Table, width: int = 80) -> list[str]:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def _assert_readable(lines: list[str]) -> None:
    assert lines
    for line in lines:
        assert len(line) <= 80, line
        assert "…" not in line, line


def test_streams_table_fits_80_columns_without_cutting_a_name() -> None:
    lines = _render(streams_table(STREAMS))
    _assert_readable(lines)
    text = "\n".join(lines)
    for word in ("KV_delivery_state", "CHAT_COMMANDS", "1234567", "3.0 GiB", "consumers"):
        assert word in text


def test_consumers_table_fits_80_columns_with_every_header_whole() -> None:
    lines = _render(consumers_table(STREAMS))
    _assert_readable(lines)
    text = "\n".join(lines)
    for word in ("notifier-callback-targets", "ack pending", "redelivered", "waiting", "104857"):
        assert word in text


def test_kv_watchers_are_one_row_with_their_count() -> None:
    rows = consumer_rows(STREAMS[1].consumers)
    assert [(r.label, r.count, r.redelivered) for r in rows] == [("6 watchers", 6, 72)]
    text = "\n".join(_render(consumers_table(STREAMS)))
    assert "Ai4HO0P" not in text
    assert "6 watchers" in text


def test_services_table_fits_80_columns_and_wraps_a_long_readiness_detail() -> None:
    lines = _render(services_table(SERVICES, now=NOW))
    _assert_readable(lines)
    text = "\n".join(lines)
    assert "ingress-dingtalk" in text
    assert "3d2h" in text  # uptime instead of a timestamp
    assert "lease" in text  # the detail wraps rather than being cut


def test_uptime_is_short_and_tolerates_missing_or_bad_timestamps() -> None:
    assert uptime("2026-12-07T11:59:48+00:00", NOW) == "12s"
    assert uptime("2026-12-07T11:55:51+00:00", NOW) == "4m09s"
    assert uptime("2026-12-07T09:55:00+00:00", NOW) == "2h05m"
    assert uptime(None, NOW) == "-"
    assert uptime("yesterday", NOW) == "-"
