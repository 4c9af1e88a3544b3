"""The notifier's pure decisions: record transitions, splitting, how alerts read (their
buttons and state lines), masking configured secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from zhongshu.contracts.events import AlertActor, AlertRaised, AlertStateChanged, ReplyGenerated
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY
from zhongshu.notifier import domain, redaction
from zhongshu.notifier.adapters import dingtalk, feishu
from zhongshu.notifier.adapters.results import Rejected
from zhongshu.notifier.domain import DeliveryRecord
from zhongshu.notifier.redaction import SecretGuard
from zhongshu.runtime.hubconfig import HubConfig


@pytest.mark.parametrize(
    ("state", "idempotent", "step"),
    [
        ("pending", False, "send"),
        ("pending", True, "send"),
        ("sending", True, "send"),  # Feishu: the same uuid makes a resend harmless
        ("sending", False, "mark_ambiguous"),  # DingTalk: never resend what may have gone out
        ("delivered", False, "republish"),
        ("failed", True, "republish"),
        ("ambiguous", False, "republish"),
    ],
)
def test_a_redelivered_message_acts_on_the_record_it_finds(
    state: domain.RecordState, idempotent: bool, step: str
) -> None:
    assert domain.next_step(DeliveryRecord(state=state), idempotent=idempotent) == step


@pytest.mark.parametrize(("claimed_s_ago", "step"), [(3, "wait"), (30, "mark_ambiguous")])
def test_a_send_that_may_still_await_its_answer_is_waited_for_not_called_ambiguous(
    claimed_s_ago: float, step: str
) -> None:
    # The chunks of a streamed reply share their card's record: one chunk's worker may find
    # another's send of the card in flight.
    now = datetime.now(UTC)
    record = DeliveryRecord(state="sending", claimed_at=now - timedelta(seconds=claimed_s_ago))
    assert domain.next_step(record, idempotent=False, now=now, in_flight_s=25) == step


def test_a_send_in_flight_is_waited_for_even_where_the_platform_would_absorb_a_resend() -> None:
    # Feishu drops a second send with the same uuid, but sending it while the first is still
    # on its way is a re-send without any fault (a final chunk finding its card being shown).
    now = datetime.now(UTC)
    young = DeliveryRecord(state="sending", claimed_at=now - timedelta(seconds=3))
    stale = DeliveryRecord(state="sending", claimed_at=now - timedelta(seconds=30))
    assert domain.next_step(young, idempotent=True, now=now, in_flight_s=25) == "wait"
    assert domain.next_step(stale, idempotent=True, now=now, in_flight_s=25) == "send"


def test_a_feishu_card_update_keeps_the_card_shared_and_refuses_one_that_is_not() -> None:
    # Only shared cards (update_multi, before and after) can be updated for everyone.
    card = {"elements": [{"tag": "markdown", "content": "approved"}]}
    assert feishu.shared_card(card) == {**card, "config": {"update_multi": True}}
    refused = feishu.shared_card({**card, "config": {"update_multi": False}})
    assert isinstance(refused, Rejected)
    template = {"type": "template", "data": {"template_id": "ctp_1"}}
    assert feishu.shared_card(template) == template


def test_an_ai_card_goes_to_a_group_or_to_one_user_s_chat_with_the_robot() -> None:
    group = dingtalk.CardSpace(conversation_id="cidGroup==")
    assert group.open_space_id == "dtv1.card//IM_GROUP.cidGroup=="
    assert dingtalk.CardSpace(staff_id="manager4521").open_space_id == (
        "dtv1.card//IM_ROBOT.manager4521"
    )


def test_over_long_text_is_split_on_utf8_boundaries_within_the_byte_limit() -> None:
    text = "你好世界" * 3000 + "end"  # 36 003 bytes
    parts = domain.parts(text, dingtalk.MAX_TEXT_BYTES)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= dingtalk.MAX_TEXT_BYTES for p in parts)
    assert len(parts) == 2


def test_splitting_prefers_a_paragraph_break() -> None:
    text = "a" * 70 + "\n" + "b" * 50
    assert domain.split_utf8(text, 100) == "a" * 70 + "\n"


def test_outcome_ids_are_the_same_on_every_redelivery() -> None:
    assert domain.outcome_id("r1", 0, "delivered") == domain.outcome_id("r1", 0, "delivered")
    assert domain.outcome_id("r1", 0, "delivered") != domain.outcome_id("r1", 0, "failed")


def test_alert_cards_are_coloured_by_level_and_count_repeats() -> None:
    alert = AlertRaised(level="critical", source="watchdog", title="disk full", detail="/ 99%")
    message = domain.alert_message(alert, repeats=4, window_s=60)
    assert message.colour == "red"
    assert "(×5)" in (message.title or "")
    assert "repeated 4 more time(s)" in message.text
    assert domain.alert_message(alert.__class__(level="warning", source="s", title="t")).colour == (
        "yellow"
    )
    assert domain.fold_key(alert) == domain.fold_key(alert)


def test_dingtalk_sign_matches_the_platform_formula() -> None:
    # base64(HMAC-SHA256(key=secret, msg=timestamp + "\n" + secret)), protocols §2.4; the
    # callback fake written for ingress implements the same formula independently.
    from zhongshu.devstack.fakes.dingtalk import sign

    assert dingtalk.robot_sign("SECabc", 1700000000000) == sign(1700000000000, "SECabc")


def test_dingtalk_errcodes_become_values() -> None:
    assert dingtalk.classify_errcode({"errcode": 0}).__class__.__name__ == "Delivered"
    limited = dingtalk.classify_errcode({"errcode": 130101, "errmsg": "send too fast"})
    assert limited.__class__.__name__ == "RateLimited"
    too_long = dingtalk.classify_errcode({"errcode": 460101, "errmsg": "too long"})
    assert getattr(too_long, "too_long", False)


def test_feishu_uuid_is_the_reply_id_or_its_hash_within_50_chars() -> None:
    assert feishu.request_uuid("r-1") == "r-1"
    assert len(feishu.request_uuid("x" * 80)) <= 50


# --- alert cards and secrets --------------------------------------------------------------------


def _changed(state: str, **fields: Any) -> AlertStateChanged:
    return AlertStateChanged(
        key="k1",
        state=state,  # type: ignore[arg-type]
        level="error",
        source="watchdog",
        title="t",
        **fields,
    )


def test_an_alert_card_offers_only_the_buttons_that_still_apply() -> None:
    labels = {
        state: [a.label for a in domain.alert_actions("k1", state)]
        for state in ("raised", "acknowledged", "silenced", "resolved")
    }
    assert labels == {
        "raised": ["Acknowledge", "Silence 1 h", "Resolve"],
        "acknowledged": ["Silence 1 h", "Resolve"],
        "silenced": ["Acknowledge", "Resolve"],
        "resolved": [],
    }
    [ack, *_] = domain.alert_actions("k1", "raised")
    assert ack.value == {CARD_VALUE_KEY: "k1", "op": "acknowledge"}


def test_the_status_line_says_who_did_what_and_when() -> None:
    at = datetime(2026, 12, 8, 10, 2, tzinfo=UTC)
    actor = AlertActor(id="ou_1", name="Li Lei", platform="feishu", app="lark")
    until = at + timedelta(hours=1)
    assert domain.status_line(_changed("acknowledged", actor=actor), at) == (
        "Acknowledged by Li Lei at 10:02 UTC"
    )
    assert domain.status_line(_changed("silenced", actor=actor, silenced_until=until), at) == (
        "Silenced until 11:02 UTC by Li Lei"
    )
    assert domain.status_line(_changed("resolved", reason="condition cleared"), at) == (
        "Resolved automatically: condition cleared"
    )
    assert domain.status_line(_changed("resolved", actor=actor), at) == (
        "Resolved by Li Lei at 10:02 UTC"
    )
    nameless = AlertActor(id="ou_1", platform="feishu", app="lark")
    assert "by ou_1" in domain.status_line(_changed("acknowledged", actor=nameless), at)


def test_a_silence_holds_repeats_back_only_until_it_ends() -> None:
    now = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    assert domain.silenced("silenced", now + timedelta(minutes=1), now)
    assert not domain.silenced("silenced", now - timedelta(minutes=1), now)
    assert not domain.silenced("acknowledged", now + timedelta(minutes=1), now)


def test_every_configured_secret_is_masked_and_named_by_where_it_is_configured() -> None:
    config = HubConfig.model_validate(
        {
            "tenants": {"acme": {}},
            "apps": {
                "lark": {
                    "tenant": "acme",
                    "platform": "feishu",
                    "feishu": {"app_id": "cli_1", "app_secret": "app-secret-123"},
                }
            },
            "alerts": {"error": [{"feishu_robot": "hook-token-456", "secret": "short"}]},
        }
    )
    guard = SecretGuard()
    text, where = redaction.redact(
        "a app-secret-123 b hook-token-456 c short", guard.secrets(config)
    )
    assert text == "a *** b *** c short"  # under 8 characters: not looked for
    assert sorted(where) == ["alerts.error[0].feishu_robot", "apps.lark.feishu.app_secret"]
    assert guard.secrets(config) is guard.secrets(config)  # computed once per configuration
    plain = ReplyGenerated(
        reply_id="r", platform="feishu", app="lark", tenant="acme", chat_id="c", text="fine"
    )
    assert guard.reply(config, plain) == (plain, ())
