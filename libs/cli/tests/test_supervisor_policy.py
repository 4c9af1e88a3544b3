"""The supervisor's pure parts: restart backoff and how service logs are shown."""

from __future__ import annotations

import json

import pytest

from zhongshu.cli.supervisor import Backoff, pretty_ecs, restart_delay


def test_backoff_starts_at_half_a_second_and_doubles_up_to_thirty() -> None:
    policy = Backoff()
    assert [policy.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.delay(10_000) == 30


def test_consecutive_quick_crashes_back_off_further() -> None:
    failures, delays = 0, []
    for _ in range(4):
        failures, delay = restart_delay(failures, uptime_s=1.0)
        delays.append(delay)
    assert delays == [0.5, 1, 2, 4]


@pytest.mark.parametrize("uptime", [60.0, 3600.0])
def test_a_child_that_stayed_up_a_minute_restarts_after_the_shortest_delay(uptime: float) -> None:
    assert restart_delay(failures=7, uptime_s=uptime) == (1, 0.5)


def test_a_child_that_crashed_within_a_minute_keeps_its_backoff() -> None:
    assert restart_delay(failures=7, uptime_s=59.9) == (8, 30)


def test_ecs_json_line_reads_as_time_level_message() -> None:
    line = json.dumps(
        {
            "@timestamp": "2025-01-02T03:04:05.678Z",
            "log.level": "warning",
            "message": "fetch failed",
            "log": {"logger": "zhongshu.runtime.consumer"},
            "error": {"type": "TimeoutError", "message": "slow", "stack_trace": "a\nb"},
        }
    )
    rendered = pretty_ecs(line)
    assert rendered is not None
    head, *rest = (t.plain for t in rendered)
    hh_mm_ss, level, *message = head.split()
    assert len(hh_mm_ss) == 8
    assert hh_mm_ss.count(":") == 2
    assert level == "WARNING"
    assert " ".join(message) == "fetch failed (zhongshu.runtime.consumer)"
    assert rest == ["  TimeoutError: slow", "  a", "  b"]


@pytest.mark.parametrize("line", ["READY echo health_port=1", "{not json", '["a list"]', ""])
def test_lines_that_are_not_ecs_json_pass_through(line: str) -> None:
    assert pretty_ecs(line) is None
