"""An alert's lifecycle on a real JetStream: anybody's alert is registered, a person's Acknowledge
applies once, Silence quiets repeats until it ends, Resolve by a person holds until the condition
cleared, and a cleared condition resolves the alert by itself."""

from __future__ import annotations

import asyncio

from services.watchdog.tests.conftest import Bus
from services.watchdog.tests.watchdog_testing import (
    ADMIN,
    FAST,
    WAIT_S,
    press,
    publish_alert,
    record_of,
    start_watchdog,
)
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import AlertStateChanged, alert_key
from zhongshu.devstack.testing import eventually

PRINTER = AlertRaised(level="error", source="router", title="printer on fire", dedupe_key="p-1")


async def _registered(bus: Bus, key: str, **expected: object) -> None:
    async def matches() -> bool:
        record = await record_of(bus.js, key)
        return record is not None and all(getattr(record, k) == v for k, v in expected.items())

    await eventually(matches, f"alert {key} with {expected}", WAIT_S)


async def test_anybodys_alert_is_registered_and_acknowledged_once(bus: Bus) -> None:
    watchdog = await start_watchdog(bus.url)
    try:
        key = await publish_alert(bus.js, PRINTER)
        await _registered(bus, key, state="raised", source="router")
        await publish_alert(bus.js, PRINTER)
        await _registered(bus, key, occurrences=2)

        await press(bus.js, key, "acknowledge")
        await press(bus.js, key, "acknowledge")
        acked = await eventually(lambda: bus.recorder.states(key, "acknowledged"), "ack", WAIT_S)
        await _registered(bus, key, state="acknowledged", acknowledged_by=ADMIN)
        await asyncio.sleep(1)  # the second press has been applied (and changed nothing)
        assert [c.state for c in bus.recorder.states(key)] == ["raised", "acknowledged"]
        change = acked[0]
        assert (change.actor, change.title, change.occurrences) == (ADMIN, PRINTER.title, 2)
        assert change.raised_at is not None
    finally:
        await watchdog.stop()


async def test_a_press_handled_before_its_raise_is_registered_is_applied_once_it_is(
    bus: Bus,
) -> None:
    """The raise and the press are read by two consumers: the press may come first (CI saw it
    lost that way). It waits, retried, for the raise instead of changing nothing."""
    watchdog = await start_watchdog(bus.url)
    try:
        early = AlertRaised(level="error", source="router", title="early press", dedupe_key="e-1")
        key = alert_key(early)
        await press(bus.js, key, "acknowledge")  # before anybody raised it
        await asyncio.sleep(0.5)
        await publish_alert(bus.js, early)
        acked = await eventually(lambda: bus.recorder.states(key, "acknowledged"), "ack", WAIT_S)
        assert acked[0].actor == ADMIN
    finally:
        await watchdog.stop()


async def test_a_silenced_alert_is_not_raised_again_until_the_silence_ends(bus: Bus) -> None:
    # Reminders every half second make "not raised while silenced" observable.
    watchdog = await start_watchdog(bus.url, FAST.model_copy(update={"remind_s": 0.5}))
    try:
        await bus.js.publish(subjects.dlq("CHAT_INBOUND", "router"), b"{}")
        first = await eventually(lambda: bus.recorder.alerts("bus.dlq"), "a DLQ alert", WAIT_S)
        key = alert_key(first[0])
        await _registered(bus, key, state="raised")
        await press(bus.js, key, "silence", silence_s=5)
        silenced = await eventually(lambda: bus.recorder.states(key, "silenced"), "silence", WAIT_S)
        assert silenced[0].silenced_until is not None
        await _registered(bus, key, state="silenced")
        during = len(bus.recorder.alerts("bus.dlq"))
        await asyncio.sleep(1.5)  # well inside the silence
        assert len(bus.recorder.alerts("bus.dlq")) == during

        def back_from_silence() -> list[AlertStateChanged]:
            return [c for c in bus.recorder.states(key, "raised") if c.reason != "raised"]

        back = await eventually(back_from_silence, "the end of the silence", WAIT_S)
        assert back[0].reason == "raised again after the silence ended"
        assert len(bus.recorder.alerts("bus.dlq")) > during
    finally:
        await watchdog.stop()


async def test_resolved_by_a_person_stays_quiet_until_the_condition_cleared_once(
    bus: Bus,
) -> None:
    watchdog = await start_watchdog(bus.url, FAST.model_copy(update={"remind_s": 0.5}))
    try:
        await bus.js.publish(subjects.dlq("CHAT_INBOUND", "router"), b"{}")
        first = await eventually(lambda: bus.recorder.alerts("bus.dlq"), "a DLQ alert", WAIT_S)
        key = alert_key(first[0])
        await _registered(bus, key, state="raised")
        await press(bus.js, key, "resolve")
        resolved = await eventually(lambda: bus.recorder.states(key, "resolved"), "resolve", WAIT_S)
        assert resolved[0].actor == ADMIN
        await _registered(bus, key, state="resolved", hold=True)
        raised = len(bus.recorder.alerts("bus.dlq"))
        await asyncio.sleep(2)  # the DLQ still holds the message: no new raise
        assert len(bus.recorder.alerts("bus.dlq")) == raised

        await bus.js.purge_stream(streams.DLQ.name)
        await _registered(bus, key, hold=False)
        await bus.js.publish(subjects.dlq("CHAT_INBOUND", "router"), b"{}")
        await _registered(bus, key, state="raised", episode=2)
    finally:
        await watchdog.stop()


async def test_a_cleared_condition_resolves_the_alert_by_itself(bus: Bus) -> None:
    watchdog = await start_watchdog(bus.url)
    try:
        await bus.js.publish(subjects.dlq("CHAT_INBOUND", "router"), b"{}")
        first = await eventually(lambda: bus.recorder.alerts("bus.dlq"), "a DLQ alert", WAIT_S)
        key = alert_key(first[0])
        await press(bus.js, key, "acknowledge")
        await eventually(lambda: bus.recorder.states(key, "acknowledged"), "ack", WAIT_S)
        await bus.js.purge_stream(streams.DLQ.name)
        resolved = await eventually(lambda: bus.recorder.states(key, "resolved"), "auto", WAIT_S)
        assert resolved[0].actor is None
        assert resolved[0].reason == "the condition cleared (bus.dlq)"
        assert resolved[0].episode == 1
    finally:
        await watchdog.stop()
