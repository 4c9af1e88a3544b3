"""Backoff and the providers' hints of when to try again, as pure functions."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from zhongshu.agent.llm.errors import LLMError, LLMGaveUp, status_is_retryable
from zhongshu.agent.llm.retry import backoff_s, retry_hint_s

NOW = 1_750_000_000.0


def test_backoff_grows_to_its_cap_and_jitter_scales_it() -> None:
    assert [backoff_s(n, lambda: 1.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert backoff_s(3, lambda: 0.25) == 1.0
    assert backoff_s(3, lambda: 0.0) == 0.0


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({}, None),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 1.0),
        ({"x-ratelimit-reset-tokens": "1m30.5s"}, 90.5),
        ({"x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"x-ratelimit-reset": "3"}, 3.0),
        ({"x-ratelimit-reset": str(int(NOW + 4))}, 4.0),
        ({"x-ratelimit-reset": str(int((NOW + 4) * 1000))}, 4.0),
        ({"x-ogw-ratelimit-reset": "1"}, 1.0),
        ({"Retry-After": "soon"}, None),
        ({"x-ratelimit-reset-requests": "1 fortnight"}, None),
        ({"Retry-After": "-1"}, None),
    ],
)
def test_retry_hints(headers: dict[str, str], hint: float | None) -> None:
    assert retry_hint_s(headers, now=NOW) == (None if hint is None else pytest.approx(hint))


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *((status, False) for status in (400, 401, 403, 404, 422)),
        *((status, True) for status in (408, 409, 429, 500, 502, 503, 504)),
    ],
)
def test_which_statuses_are_retried(status: int, retryable: bool) -> None:
    assert status_is_retryable(status) is retryable


def test_gave_up_carries_the_last_error() -> None:
    errors = [
        LLMError("http_429", "HTTP 429", retryable=True, provider="a", status=429),
        LLMError("timeout", "no whole answer", retryable=True, provider="b"),
    ]
    gave_up = LLMGaveUp(errors, attempts=2, elapsed_s=30.2)
    assert (gave_up.code, gave_up.provider, gave_up.attempts) == ("timeout", "b", 2)
    assert gave_up.last is errors[-1]
    assert not gave_up.retryable
    assert str(gave_up) == "gave up after 2 attempt(s) in 30.2s; last: b: timeout: no whole answer"
