"""The gateway's pure decisions, without any server: schedule cadences and their next firing,
and pagination cursors (workflow and trigger checks: libs/contracts/tests/test_validation.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zhongshu.gateway.domain import cadence, cursor

NOW = datetime(2026, 3, 7, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "spec"),
    [
        ("0 9 * * 1-5", "0 0 9 * * 1-5"),
        ("*/15  *  * * * *", "*/15 * * * * *"),
        ("@daily", "@daily"),
        ("@every 1h30m", "@every 1h30m"),
    ],
)
def test_cadences_are_written_as_nats_server_reads_them(given: str, spec: str) -> None:
    assert cadence.parse(given).spec == spec


def test_every_counts_from_when_the_schedule_was_stored() -> None:
    every = cadence.parse("@every 90s")
    assert every.every_s == 90
    since = NOW - timedelta(seconds=100)
    assert cadence.next_fire(every, time_zone=None, now=NOW, since=since) == since + timedelta(
        seconds=180
    )


def test_cron_fires_next_in_its_own_zone_across_daylight_saving() -> None:
    morning = cadence.parse("0 9 * * *", "America/New_York")
    # 2026-03-08 is the day New York moves to UTC-4: 09:00 that day is 13:00 UTC, not 14:00.
    first = cadence.next_fire(morning, time_zone="America/New_York", now=NOW, since=NOW)
    assert first == datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    second = cadence.next_fire(morning, time_zone="America/New_York", now=first, since=NOW)
    assert second == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)
    utc = cadence.next_fire(cadence.parse("0 9 * * *"), time_zone=None, now=NOW, since=NOW)
    assert utc == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "zone", "says"),
    [
        ("0 9 * *", None, "5 fields"),
        ("0 9 * * L", None, "not a valid cron"),
        ("@every 999ms", None, "at least 1s"),
        ("@every 1 day", None, "duration"),
        ("@sometimes", None, "unknown schedule"),
        ("0 9 * * *", "Nowhere/City", "unknown time zone"),
        ("@every 1h", "UTC", "time zone applies to cron"),
    ],
)
def test_unusable_cadences_say_why(given: str, zone: str | None, says: str) -> None:
    with pytest.raises(cadence.InvalidSchedule, match=says):
        cadence.parse(given, zone)


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    token = cursor.encode(NOW, "task-1")
    assert cursor.decode(token) == (NOW, "task-1")
    for garbage in ("", "abc", "W10", cursor.encode(NOW, "x")[:-3]):
        with pytest.raises(cursor.InvalidCursor):
            cursor.decode(garbage)
