"""Properties of `sanitize_token` over any string Hypothesis can make (surrogates, control and
combining characters, and values past the length bound): what a tenant or app is called can never
reach into another subject's space or widen a subscription."""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhongshu.contracts import subjects
from zhongshu.contracts.subjects import MAX_TOKEN_LENGTH, sanitize_token

# No deadline and no too-slow check: a busy CI machine must not fail a property by its clock.
PROPERTY = settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
LONG_TEXT = st.text(st.characters(exclude_categories=()), min_size=MAX_TOKEN_LENGTH + 1)
SAFE = re.compile(r"[a-z0-9_-]+")


@PROPERTY
@given(ANY_TEXT)
def test_a_token_is_never_empty_and_holds_no_dot_wildcard_or_space(value: str) -> None:
    token = sanitize_token(value)
    assert SAFE.fullmatch(token), token
    assert not {".", "*", ">"} & set(token)
    assert not any(ch.isspace() for ch in token)


@PROPERTY
@given(ANY_TEXT)
def test_a_token_is_at_most_the_bound_and_sanitizing_it_again_changes_nothing(value: str) -> None:
    token = sanitize_token(value)
    assert 1 <= len(token) <= MAX_TOKEN_LENGTH
    assert sanitize_token(token) == token


@PROPERTY
@given(LONG_TEXT, ANY_TEXT, ANY_TEXT)
def test_distinct_long_values_stay_distinct(base: str, left: str, right: str) -> None:
    # Two values sharing a long prefix (so the same readable part of their token) differ only
    # past the bound: the hash of the whole value keeps their tokens apart.
    first, second = base + left, base + right
    if first != second:
        assert sanitize_token(first) != sanitize_token(second)


@PROPERTY
@given(ANY_TEXT, ANY_TEXT)
def test_a_subject_built_from_any_values_has_exactly_its_tokens(platform: str, tenant: str) -> None:
    subject = subjects.chat_inbound(platform, tenant)
    assert subject.split(".") == [
        "chat",
        "inbound",
        sanitize_token(platform),
        sanitize_token(tenant),
    ]
