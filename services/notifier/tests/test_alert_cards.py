"""Alert cards sent through an app, on real NATS and Redis: the card carries Acknowledge,
Silence 1 h and Resolve as callback buttons on both platforms, each state change redraws every
card of the alert in place once (also after a restart), silenced repeats are not sent, and a
configured secret never leaves in a message."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from services.notifier.tests.notifier_testing import (
    Bus,
    Platforms,
    StartNotifier,
    publish,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AlertActor,
    AlertRaised,
    AlertStateChanged,
    ReplyGenerated,
    alert_key,
)
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY
from zhongshu.devstack.fakes.base_openapi import Injected
from zhongshu.devstack.fakes.dingtalk_openapi import BUTTON_CARD_TEMPLATE
from zhongshu.devstack.fakes.feishu_openapi import card_text
from zhongshu.devstack.testing import collect, drained
from zhongshu.notifier.redaction import MASK

LABELS = ["Acknowledge", "Silence 1 h", "Resolve"]
FEISHU_CHAT, DINGTALK_CHAT = "oc_ops", "cidOpsGroup"


def an_alert(level: str = "error") -> AlertRaised:
    return AlertRaised(
        level=level,  # type: ignore[arg-type]
        source="watchdog",
        title="notifier is down",
        detail="no heartbeat for 60 s",
        dedupe_key=f"down:notifier:{uuid.uuid4().hex}",  # Redis is shared by the session
    )


async def raise_alert(bus: Bus, alert: AlertRaised) -> str:
    env = wire.make_envelope(alert, id=f"alert-{uuid.uuid4().hex}", source="test", tenant="")
    await bus.js.publish(
        subjects.alert(alert.level, alert.source), wire.encode(env), headers={H.MSG_ID: env.id}
    )
    return env.id


def state_change(alert: AlertRaised, state: str, **fields: object) -> AlertStateChanged:
    return AlertStateChanged(
        key=alert_key(alert),
        state=state,  # type: ignore[arg-type]
        level=alert.level,
        source=alert.source,
        title=alert.title,
        detail=alert.detail,
        **fields,  # type: ignore[arg-type]
    )


async def change_state(
    bus: Bus, changed: AlertStateChanged, *, at: datetime | None = None
) -> Envelope[AlertStateChanged]:
    """The watchdog's announcement of a change, made ``at`` (now by default)."""
    env = wire.make_envelope(
        changed, id=f"state-{uuid.uuid4().hex}", source="test", tenant="", time=at
    )
    await store(bus, env)
    return env


async def store(bus: Bus, env: Envelope[AlertStateChanged], msg_id: str = "") -> None:
    """Store ``env`` (again, under another ``msg_id``: a copy past the duplicate window)."""
    await bus.js.publish(
        subjects.alert_state(env.data.key), wire.encode(env), headers={H.MSG_ID: msg_id or env.id}
    )


LI_LEI = AlertActor(id="ou_lilei", name="Li Lei", platform="feishu", app="lark")


async def test_an_alert_card_in_a_feishu_chat_has_the_three_callback_buttons(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(platforms.config(error=[{"app": "lark", "chat": FEISHU_CHAT}]))
    alert = an_alert()
    await raise_alert(bus, alert)
    fake = platforms.feishu
    await fake.wait_until(lambda: len(fake.cards_in(FEISHU_CHAT)) == 1, 15)
    [message_id] = fake.cards_in(FEISHU_CHAT)
    card = fake.card(message_id)
    assert card["config"]["update_multi"] is True  # so it can be updated for everyone
    assert card["header"]["title"]["content"] == "[ERROR] notifier is down"
    buttons = fake.buttons(message_id)
    assert [b.label for b in buttons] == LABELS
    key = alert_key(alert)
    assert [b.value for b in buttons] == [
        {CARD_VALUE_KEY: key, "op": op} for op in ("acknowledge", "silence", "resolve")
    ]
    assert all(b.url is None for b in buttons)


async def test_an_alert_card_in_a_dingtalk_group_has_the_three_callback_buttons(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(platforms.config(error=[{"app": "ding", "chat": DINGTALK_CHAT}]))
    alert = an_alert()
    await raise_alert(bus, alert)
    fake = platforms.dingtalk
    await fake.wait_until(lambda: len(fake.cards_in(DINGTALK_CHAT)) == 1, 15)
    card = fake.ai_cards[fake.cards_in(DINGTALK_CHAT)[0]]
    assert (card.template_id, card.space_type, card.callback_type) == (
        BUTTON_CARD_TEMPLATE,
        "IM_GROUP",
        "STREAM",
    )
    assert card.params["title"] == "[ERROR] notifier is down"
    assert card.labels == LABELS
    key = alert_key(alert)
    assert [b["params"] for b in card.buttons] == [
        {CARD_VALUE_KEY: key, "op": op} for op in ("acknowledge", "silence", "resolve")
    ]
    assert all(b["request"] is True for b in card.buttons)


async def test_a_robot_webhook_route_gets_the_alert_without_buttons(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    hook = {"feishu_robot": platforms.feishu_hook, "secret": platforms.feishu_hook_secret}
    await start_notifier(platforms.config(error=[hook]))
    await raise_alert(bus, an_alert())
    await platforms.feishu.wait_until(lambda: len(platforms.feishu.deliveries) == 1, 15)
    [sent] = platforms.feishu.deliveries
    assert sent.kind == "bot"
    assert "action" not in json.dumps(sent.content)  # nothing could receive a click


async def test_a_state_change_updates_the_feishu_card_in_place_once_even_when_redelivered(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(platforms.config(error=[{"app": "lark", "chat": FEISHU_CHAT}]))
    alert = an_alert()
    await raise_alert(bus, alert)
    fake = platforms.feishu
    await fake.wait_until(lambda: len(fake.cards_in(FEISHU_CHAT)) == 1, 15)
    changed = state_change(alert, "acknowledged", actor=LI_LEI)
    env = await change_state(bus, changed, at=datetime(2026, 12, 8, 10, 2, tzinfo=UTC))
    # The same event stored again (the watchdog published it twice, past the duplicate window).
    await store(bus, env, msg_id=env.id + ":again")
    await fake.wait_until(lambda: len(fake.updates) >= 1, 15)
    await drained(bus.js, streams.ALERTS.name, "notifier-alert-states")
    [message_id] = fake.cards_in(FEISHU_CHAT)
    assert [u.message_id for u in fake.updates] == [message_id]
    text = card_text(fake.card(message_id))
    assert "Acknowledged by Li Lei at 10:02 UTC" in text
    assert [b.label for b in fake.buttons(message_id)] == ["Silence 1 h", "Resolve"]
    assert len(fake.deliveries) == 1  # updated, not sent again


async def test_resolved_automatically_and_an_older_change_does_not_draw_over_a_newer_one(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(platforms.config(error=[{"app": "ding", "chat": DINGTALK_CHAT}]))
    alert = an_alert()
    await raise_alert(bus, alert)
    fake = platforms.dingtalk
    await fake.wait_until(lambda: len(fake.cards_in(DINGTALK_CHAT)) == 1, 15)
    card = fake.ai_cards[fake.cards_in(DINGTALK_CHAT)[0]]
    older = await change_state(bus, state_change(alert, "acknowledged", actor=LI_LEI))
    await change_state(
        bus,
        state_change(alert, "resolved", reason="heartbeat is back"),
        at=older.time + timedelta(seconds=1),
    )
    await fake.wait_until(lambda: "Resolved" in card.params["markdown"], 15)
    await drained(bus.js, streams.ALERTS.name, "notifier-alert-states")
    assert "Resolved automatically: heartbeat is back" in card.params["markdown"]
    assert card.labels == []  # nothing left to press
    # The acknowledgement stored again after the resolution: the card stays resolved.
    await store(bus, older, msg_id=older.id + ":late")
    await drained(bus.js, streams.ALERTS.name, "notifier-alert-states")
    # Drawn last whichever order the two were handled in (an older one is skipped, not drawn).
    assert "Resolved automatically" in card.params["markdown"]
    assert "Resolved automatically" in card.data_updates[-1]["markdown"]


async def test_repeats_of_a_silenced_alert_are_not_sent(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(
        platforms.config(error=[{"app": "lark", "chat": FEISHU_CHAT}]), alert_window_s=0.2
    )
    alert = an_alert()
    await raise_alert(bus, alert)
    fake = platforms.feishu
    await fake.wait_until(lambda: len(fake.cards_in(FEISHU_CHAT)) == 1, 15)
    until = datetime.now(UTC) + timedelta(hours=1)
    await change_state(bus, state_change(alert, "silenced", actor=LI_LEI, silenced_until=until))
    await fake.wait_until(lambda: len(fake.updates) == 1, 15)
    [message_id] = fake.cards_in(FEISHU_CHAT)
    assert "Silenced until" in card_text(fake.card(message_id))
    for _ in range(3):
        await raise_alert(bus, alert)
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    assert len(fake.deliveries) == 1
    # Another alert is not held back by this one's silence.
    await raise_alert(bus, an_alert())
    await fake.wait_until(lambda: len(fake.deliveries) == 2, 15)


async def test_the_cards_of_an_alert_are_updated_after_a_notifier_restart(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    config = platforms.config(
        error=[{"app": "lark", "chat": FEISHU_CHAT}, {"app": "ding", "chat": DINGTALK_CHAT}]
    )
    first = await start_notifier(config)
    alert = an_alert()
    await raise_alert(bus, alert)
    feishu, dingtalk = platforms.feishu, platforms.dingtalk
    await feishu.wait_until(lambda: len(feishu.cards_in(FEISHU_CHAT)) == 1, 15)
    await dingtalk.wait_until(lambda: len(dingtalk.cards_in(DINGTALK_CHAT)) == 1, 15)
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    await first.stop()
    await start_notifier(config)
    await change_state(bus, state_change(alert, "acknowledged", actor=LI_LEI))
    await feishu.wait_until(lambda: len(feishu.updates) == 1, 15)
    card = dingtalk.ai_cards[dingtalk.cards_in(DINGTALK_CHAT)[0]]
    await dingtalk.wait_until(lambda: len(card.data_updates) == 1, 15)
    assert "Acknowledged by Li Lei" in card_text(feishu.card(feishu.cards_in(FEISHU_CHAT)[0]))
    assert "Acknowledged by Li Lei" in card.params["markdown"]
    assert card.labels == ["Silence 1 h", "Resolve"]


async def test_a_configured_secret_in_a_reply_is_masked_and_raises_a_critical_alert(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier()
    secret = platforms.feishu.app_secret
    reply = ReplyGenerated(
        reply_id=f"r-{uuid.uuid4().hex}",
        platform="feishu",
        app="lark",
        tenant="acme",
        chat_id="oc_chat",
        text=f"the app secret is {secret}, keep it safe",
        final=True,
    )
    await publish(bus, reply)
    fake = platforms.feishu
    await fake.wait_until(lambda: len(fake.deliveries) == 1, 15)
    [sent] = fake.deliveries
    assert secret not in sent.text
    assert sent.content["text"] == f"the app secret is {MASK}, keep it safe"
    [raw] = await collect(bus.js, subjects.alert("critical", "notifier"), count=1, within_s=10)
    assert secret.encode() not in raw.data
    alert = wire.decode(raw.data, AlertRaised).data
    assert (alert.level, alert.source, alert.title) == (
        "critical",
        "notifier",
        "a configured secret was about to be sent",
    )
    assert "apps.lark.feishu.app_secret" in alert.detail


async def test_a_card_update_the_platform_failed_is_retried_until_it_is_applied_once(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(platforms.config(error=[{"app": "lark", "chat": FEISHU_CHAT}]))
    alert = an_alert()
    await raise_alert(bus, alert)
    fake = platforms.feishu
    await fake.wait_until(lambda: len(fake.cards_in(FEISHU_CHAT)) == 1, 15)
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")  # the card is remembered
    # The first PATCH fails on the platform's side: the change comes back (JetStream redelivers
    # it after the backoff) and the update goes through then.
    fake.inject(Injected(status=500, body={"code": 1, "msg": "internal error"}))
    await change_state(bus, state_change(alert, "acknowledged", actor=LI_LEI))
    await fake.wait_until(lambda: len(fake.updates) == 1, 20)
    await drained(bus.js, streams.ALERTS.name, "notifier-alert-states")
    assert [code for path, code in fake.errors if path.startswith("/open-apis/im")] == []
    [message_id] = fake.cards_in(FEISHU_CHAT)
    assert "Acknowledged by Li Lei" in card_text(fake.card(message_id))
    assert len(fake.updates) == 1


async def test_a_card_still_being_sent_when_the_alert_changes_state_is_redrawn_once(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    await start_notifier(platforms.config(error=[{"app": "lark", "chat": FEISHU_CHAT}]))
    fake = platforms.feishu
    fake.answer_delay_s = 1.0  # the card is shown; the answer comes back later (timeout: 2 s)
    alert = an_alert()
    await raise_alert(bus, alert)
    await fake.wait_until(lambda: len(fake.cards_in(FEISHU_CHAT)) == 1, 15)
    await change_state(bus, state_change(alert, "acknowledged", actor=LI_LEI))
    await drained(bus.js, streams.ALERTS.name, "notifier-alert-states")
    fake.answer_delay_s = 0
    await fake.wait_until(lambda: len(fake.updates) == 1, 15)
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    [message_id] = fake.cards_in(FEISHU_CHAT)
    # Whichever came first, the card was redrawn exactly once: by the change (card known) or
    # by the send (change applied before the card was).
    assert len(fake.updates) == 1
    assert "Acknowledged by Li Lei" in card_text(fake.card(message_id))
    assert [b.label for b in fake.buttons(message_id)] == ["Silence 1 h", "Resolve"]
