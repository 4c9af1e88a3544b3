"""Subjects are built only from sanitized tokens, and each lands in the stream meant for it."""

from collections.abc import Callable

import pytest

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.streams import StreamSpec

HOSTILE = [
    "a.b*>c D",
    ">",
    "*",
    "..",
    "",
    " ",
    "tab\there",
    "new\nline",
    "飞书租户",
    "ÄÖÜ-ß",
    "emoji-🚀",
    "UPPER_case-9",
    "x" * 500,
    "$SYS",
    "nul\x00byte",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_sanitized_token_is_one_safe_token(value: str) -> None:
    token = subjects.sanitize_token(value)
    assert token
    assert len(token) <= subjects.MAX_TOKEN_LENGTH
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789_-" for c in token), token


def test_sanitize_lowercases_and_replaces() -> None:
    assert subjects.sanitize_token("a.b*>c D") == "a_b__c_d"
    assert subjects.sanitize_token("Acme-Corp_1") == "acme-corp_1"
    assert subjects.sanitize_token("") == "_"
    assert subjects.sanitize_token("飞书") == "__"


def test_long_tokens_are_shortened_deterministically_and_stay_distinct() -> None:
    first = "tenant-" + "a" * 100
    second = "tenant-" + "a" * 99 + "b"
    assert subjects.sanitize_token(first) == subjects.sanitize_token(first)
    assert subjects.sanitize_token(first) != subjects.sanitize_token(second)
    assert len(subjects.sanitize_token(first)) == subjects.MAX_TOKEN_LENGTH
    assert subjects.sanitize_token(first).startswith("tenant-aaaa")
    assert subjects.sanitize_token("x" * 64) == "x" * 64


def test_hostile_tokens_cannot_add_tokens_or_wildcards() -> None:
    subject = subjects.chat_inbound("feishu", "a.b*>c D")
    assert subject == "chat.inbound.feishu.a_b__c_d"
    assert len(subject.split(".")) == 4


BUILDERS: list[tuple[str, Callable[[], str], StreamSpec]] = [
    ("chat_inbound", lambda: subjects.chat_inbound("feishu", "acme"), streams.CHAT_INBOUND),
    ("chat_command", lambda: subjects.chat_command("dingtalk", "acme"), streams.CHAT_COMMANDS),
    ("chat_query", lambda: subjects.chat_query("feishu", "acme"), streams.CHAT_QUERIES),
    ("chat_reply", lambda: subjects.chat_reply("feishu", "acme"), streams.REPLIES),
    ("alert", lambda: subjects.alert("critical", "watchdog"), streams.ALERTS),
    ("task_requested", lambda: subjects.task_requested("acme"), streams.TASKS),
    ("task_event", lambda: subjects.task_event("acme", "t-1"), streams.TASKS),
    ("schedule", lambda: subjects.schedule("acme", "daily"), streams.SCHEDULES),
    ("schedule_fired", lambda: subjects.schedule_fired("acme", "daily"), streams.SCHEDULES),
    ("events", lambda: subjects.events("ops", "deploy", "finished"), streams.EVENTS),
    ("events_team_only", lambda: subjects.events("ops"), streams.EVENTS),
    ("delivery", lambda: subjects.delivery("delivered", "feishu", "acme"), streams.DELIVERIES),
    ("audit", lambda: subjects.audit("acme", "chat.denied"), streams.AUDIT),
    ("dlq", lambda: subjects.dlq("CHAT_INBOUND", "router"), streams.DLQ),
]


@pytest.mark.parametrize(("name", "build", "expected"), BUILDERS, ids=[b[0] for b in BUILDERS])
def test_each_builder_lands_in_its_stream(
    name: str, build: Callable[[], str], expected: StreamSpec
) -> None:
    assert streams.stream_for_subject(build()) is expected


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_tokens_stay_in_their_stream(value: str) -> None:
    for subject, expected in [
        (subjects.chat_inbound(value, value), streams.CHAT_INBOUND),
        (subjects.task_event(value, value), streams.TASKS),
        (subjects.schedule(value, value), streams.SCHEDULES),
        (subjects.events(value, value, value), streams.EVENTS),
        (subjects.dlq(value, value), streams.DLQ),
    ]:
        assert streams.stream_for_subject(subject) is expected


def test_schedule_definitions_and_firings_are_told_apart_by_filters() -> None:
    definition = subjects.schedule("acme", "fired")
    firing = subjects.schedule_fired("acme", "daily")
    assert subjects.subject_matches(subjects.ALL_SCHEDULES, definition)
    assert not subjects.subject_matches(subjects.ALL_SCHEDULES, firing)
    assert subjects.subject_matches(subjects.ALL_SCHEDULE_FIRINGS, firing)
    assert not subjects.subject_matches(subjects.ALL_SCHEDULE_FIRINGS, definition)
    assert subjects.subject_matches(subjects.schedules_for("ACME"), definition)


def test_filters_match_what_the_builders_build() -> None:
    assert subjects.subject_matches(
        subjects.task_events_for("acme"), subjects.task_event("acme", "t1")
    )
    assert not subjects.subject_matches(
        subjects.task_events_for("acme"), subjects.task_event("other", "t1")
    )
    assert subjects.subject_matches(subjects.chat_inbound_for("feishu"), "chat.inbound.feishu.a")
    assert subjects.subject_matches(subjects.alerts_at("error"), subjects.alert("error", "x"))
    assert subjects.subject_matches(subjects.events_from("ops"), subjects.events("ops", "a", "b"))
    assert subjects.subject_matches(
        subjects.deliveries_with("failed"), subjects.delivery("failed", "feishu", "acme")
    )
    assert subjects.subject_matches(subjects.audit_for("acme"), subjects.audit("acme", "login"))
    assert subjects.subject_matches(subjects.dlq_for("TASKS"), subjects.dlq("TASKS", "agent"))


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b", "a.b", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_subject_matching_follows_nats_wildcards(
    pattern: str, subject: str, expected: bool
) -> None:
    assert subjects.subject_matches(pattern, subject) is expected


def test_unknown_subject_has_no_stream() -> None:
    with pytest.raises(KeyError, match=r"no zhongshu stream stores subject 'chat\.unknown\.x'"):
        streams.stream_for_subject("chat.unknown.x")
