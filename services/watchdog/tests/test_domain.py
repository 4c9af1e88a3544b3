"""The lifecycle and the checks' arithmetic, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import AlertActionRequested, AlertActor, alert_key
from zhongshu.watchdog.domain import (
    AlertRecord,
    Bursts,
    Finding,
    Growth,
    Sustained,
    TrailMark,
    acted,
    cleared,
    raise_id,
    registered,
    trail_breaks,
)

T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
ADMIN = AlertActor(id="ou_admin", name="Admin", platform="feishu", app="bot")
DOWN = Finding(
    check="service.down", subject="router", level="error", title="router is down", detail="x"
)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _raised(alert: AlertRaised | None = None, at: float = 0, raise_id: str = "r1") -> AlertRecord:
    decision = registered(None, alert or DOWN.alert(), raise_id=raise_id, at=_at(at))
    assert decision.record is not None
    return decision.record


def _action(action: str, key: str, silence_s: int = 3600) -> AlertActionRequested:
    return AlertActionRequested(
        key=key,
        action=action,  # type: ignore[arg-type]
        actor=ADMIN,
        silence_s=silence_s,
    )


def test_a_first_raise_opens_episode_one_and_repeats_count_occurrences() -> None:
    opened = registered(None, DOWN.alert(), raise_id="r1", at=_at(0))
    assert opened.change is not None
    assert (opened.change.state, opened.change.episode, opened.change.actor) == ("raised", 1, None)
    record = _raised()
    assert (record.state, record.episode, record.occurrences, record.watched) == (
        "raised",
        1,
        1,
        True,
    )
    again = registered(record, DOWN.alert(), raise_id="r2", at=_at(5))
    assert again.change is None
    assert again.record is not None
    assert again.record.occurrences == 2
    redelivered = registered(again.record, DOWN.alert(), raise_id="r2", at=_at(5))
    assert redelivered.record is None


def test_acknowledge_is_one_transition_and_a_second_changes_nothing() -> None:
    record = _raised()
    first = acted(record, _action("acknowledge", record.key), _at(10))
    assert first.change is not None
    assert first.record is not None
    assert (first.change.state, first.change.actor) == ("acknowledged", ADMIN)
    assert acted(first.record, _action("acknowledge", record.key), _at(11)).record is None


def test_silence_holds_until_it_ends_and_a_raise_after_brings_it_back() -> None:
    record = _raised()
    silenced = acted(record, _action("silence", record.key, silence_s=60), _at(10))
    assert silenced.record is not None
    assert silenced.change is not None
    assert silenced.change.silenced_until == _at(70)
    assert raise_id(DOWN, silenced.record, _at(30), remind_s=1) == ""
    during = registered(silenced.record, DOWN.alert(), raise_id="r2", at=_at(30))
    assert during.change is None
    assert during.record is not None
    assert during.record.state == "silenced"
    assert raise_id(DOWN, during.record, _at(71), remind_s=0) != ""
    after = registered(during.record, DOWN.alert(), raise_id="r3", at=_at(71))
    assert after.change is not None
    assert after.change.state == "raised"


def test_resolved_by_a_person_is_not_raised_again_until_the_condition_cleared() -> None:
    record = _raised()
    resolved = acted(record, _action("resolve", record.key), _at(10)).record
    assert resolved is not None
    assert (resolved.state, resolved.hold, resolved.resolved_by) == ("resolved", True, ADMIN)
    assert raise_id(DOWN, resolved, _at(20), remind_s=0) == ""
    assert registered(resolved, DOWN.alert(), raise_id="r2", at=_at(20)).record is None
    released = cleared(resolved, "gone", _at(30))
    assert released.change is None
    assert released.record is not None
    assert not released.record.hold
    assert raise_id(DOWN, released.record, _at(40), remind_s=0).endswith(":2:raised")
    episode_two = registered(released.record, DOWN.alert(), raise_id="r3", at=_at(40)).record
    assert episode_two is not None
    assert (episode_two.state, episode_two.episode) == ("raised", 2)


def test_anybody_elses_alert_resolved_by_a_person_opens_anew_on_its_next_raise() -> None:
    other = AlertRaised(level="error", source="router", title="printer on fire")
    record = _raised(other)
    assert not record.watched
    resolved = acted(record, _action("resolve", alert_key(other)), _at(10)).record
    assert resolved is not None
    assert not resolved.hold
    reopened = registered(resolved, other, raise_id="r2", at=_at(20)).record
    assert reopened is not None
    assert (reopened.state, reopened.episode) == ("raised", 2)


def test_a_cleared_condition_resolves_with_no_actor_and_a_late_raise_does_not_reopen() -> None:
    record = _raised()
    decision = cleared(record, "the condition cleared", _at(10))
    assert decision.change is not None
    assert (decision.change.state, decision.change.actor) == ("resolved", None)
    assert decision.record is not None
    late = registered(decision.record, DOWN.alert(), raise_id="r0", at=_at(5))
    assert late.record is None


def test_transitions_have_distinct_deterministic_ids() -> None:
    record = _raised()
    acked = acted(record, _action("acknowledge", record.key), _at(1)).record
    assert acked is not None
    resolved = cleared(acked, "gone", _at(2)).record
    assert resolved is not None
    assert (acked.transitions, resolved.transitions) == (2, 3)
    assert acked.announce is not None
    assert resolved.announce is not None


def test_reminders_come_every_remind_s_while_nobody_acknowledged() -> None:
    record = _raised()
    assert raise_id(DOWN, record, _at(30), remind_s=60) == ""
    assert raise_id(DOWN, record, _at(60), remind_s=60) != ""
    assert raise_id(DOWN, record, _at(600), remind_s=0) == ""
    acked = acted(record, _action("acknowledge", record.key), _at(1)).record
    assert raise_id(DOWN, acked, _at(600), remind_s=60) == ""


def test_sustained_counts_from_the_first_observation_and_resets() -> None:
    above = Sustained()
    assert above.update("cpu", True, _at(0)) == 0
    assert above.update("cpu", True, _at(30)) == 30
    assert above.update("cpu", False, _at(31)) == 0
    assert above.update("cpu", True, _at(40)) == 0


def test_lag_grows_only_when_it_rose_across_the_whole_window() -> None:
    growth = Growth()
    assert not growth.update("c", 5, _at(0), window_s=60, floor=1)
    assert not growth.update("c", 9, _at(30), window_s=60, floor=1)
    assert growth.update("c", 12, _at(60), window_s=60, floor=1)
    assert not growth.update("c", 0, _at(61), window_s=60, floor=1)  # caught up
    assert not growth.update("c", 50, _at(62), window_s=60, floor=1)


def test_bursts_count_one_source_in_the_window_with_weights() -> None:
    bursts = Bursts()
    for i in range(25):
        bursts.add("feishu:10.0.0.9", _at(i), cap=20)
    bursts.add("api:10.0.0.7", _at(10), cap=20, count=7)
    counts = bursts.counts(_at(30), window_s=60)
    assert counts == {"feishu:10.0.0.9": 20, "api:10.0.0.7": 7}
    assert bursts.counts(_at(200), window_s=60) == {}


def _mark(first: int, last: int, deleted: int = 0, first_age_s: float = 10) -> TrailMark:
    return TrailMark(
        first_seq=first,
        last_seq=last,
        num_deleted=deleted,
        messages=last - first + 1 - deleted,
        first_at=_at(-first_age_s),
    )


MAX_AGE = 400 * 86400.0


def _breaks(before: TrailMark, after: TrailMark, near_cap: bool = False) -> list[str]:
    return trail_breaks(before, after, now=_at(0), max_age_s=MAX_AGE, near_byte_cap=near_cap)


def test_the_audit_trail_breaks_on_deletes_and_purges_but_not_on_its_limits() -> None:
    assert _breaks(_mark(1, 10), _mark(1, 12)) == []
    assert _breaks(_mark(1, 10), _mark(1, 10, deleted=1))
    assert _breaks(_mark(1, 10), _mark(6, 10))
    assert _breaks(_mark(1, 10), _mark(1, 3))
    assert _breaks(_mark(1, 10, first_age_s=MAX_AGE), _mark(6, 10)) == []
    assert _breaks(_mark(1, 10), _mark(6, 12), near_cap=True) == []
