"""Alerts on real NATS and Redis: routed by level to signed robot webhooks as coloured cards,
kept under the robot's rate limit, repeats folded into one message with a count."""

from __future__ import annotations

import asyncio
import uuid

from services.notifier.tests.notifier_testing import Bus, Platforms, StartNotifier
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AlertRaised
from zhongshu.devstack.fakes.base_openapi import SlidingWindow
from zhongshu.devstack.testing import drained


async def raise_alerts(bus: Bus, *alerts: AlertRaised) -> None:
    for alert in alerts:
        env = wire.make_envelope(alert, id=f"alert-{uuid.uuid4().hex}", source="test", tenant="")
        await bus.js.publish(
            subjects.alert(alert.level, alert.source), wire.encode(env), headers={H.MSG_ID: env.id}
        )


async def test_a_burst_of_50_alerts_to_one_dingtalk_robot_is_delivered_without_a_rate_limit_error(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    # The platform's 20/min, scaled to 20 per 3 s on both sides so the test takes seconds;
    # the notifier keeps its margin (18 per window) for the time between taking a slot and the
    # request reaching the platform.
    platforms.dingtalk.robot_limit = SlidingWindow(20, 3.0)
    platforms.dingtalk.block_s = 3.0
    config = platforms.config(
        warning=[{"dingtalk_robot": platforms.robot_token, "secret": platforms.robot_secret}]
    )
    await start_notifier(config, dingtalk_robot_window_s=3.0)
    run = uuid.uuid4().hex
    alerts = [
        AlertRaised(
            level="warning", source="watchdog", title=f"cpu {i}", dedupe_key=f"cpu-{i}-{run}"
        )
        for i in range(50)
    ]
    started = asyncio.get_running_loop().time()
    await raise_alerts(bus, *alerts)
    await platforms.dingtalk.wait_until(lambda: len(platforms.dingtalk.deliveries) >= 50, 60)
    took = asyncio.get_running_loop().time() - started
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    sent = platforms.dingtalk.delivered_to("robot")
    assert len(sent) == 50
    assert platforms.dingtalk.rate_limit_errors == 0
    assert platforms.dingtalk.errors == []  # the signature was accepted every time
    assert took >= 6.0  # 50 at 18 per 3 s: the limiter did hold sends back
    assert {d.content["title"] for d in sent} == {f"[WARNING] cpu {i}" for i in range(50)}
    assert all(d.msgtype == "actionCard" for d in sent)


async def test_repeats_of_one_alert_within_the_window_become_one_message_with_a_count(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    config = platforms.config(
        critical=[{"feishu_robot": platforms.feishu_hook, "secret": platforms.feishu_hook_secret}]
    )
    await start_notifier(config, alert_window_s=1.5)
    alert = AlertRaised(
        level="critical",
        source="watchdog",
        title="disk full",
        detail="/ 99 %",
        dedupe_key=f"disk-{uuid.uuid4().hex}",  # Redis is shared by the test session
    )
    await raise_alerts(bus, *([alert] * 5))
    await platforms.feishu.wait_until(lambda: len(platforms.feishu.deliveries) >= 2, 20)
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    first, summary = platforms.feishu.deliveries
    assert first.msg_type == summary.msg_type == "interactive"
    assert first.content["header"]["template"] == "red"
    assert first.content["header"]["title"]["content"] == "[CRITICAL] disk full"
    assert summary.content["header"]["title"]["content"] == "[CRITICAL] disk full (×5)"
    assert "repeated 4 more time(s)" in summary.content["elements"][0]["content"]
    assert platforms.feishu.errors == []  # signed correctly

    # After the window a repeat opens a new one: sent again, at once.
    await asyncio.sleep(1.6)
    await raise_alerts(bus, alert)
    await platforms.feishu.wait_until(lambda: len(platforms.feishu.deliveries) >= 3, 20)
    assert platforms.feishu.deliveries[2].content["header"]["title"]["content"] == (
        "[CRITICAL] disk full"
    )


async def test_alert_levels_go_to_their_own_channels_in_their_colours(
    bus: Bus, platforms: Platforms, start_notifier: StartNotifier
) -> None:
    route = {"feishu_robot": platforms.feishu_hook, "secret": platforms.feishu_hook_secret}
    config = platforms.config(warning=[route], error=[route])
    await start_notifier(config)
    await raise_alerts(
        bus,
        AlertRaised(level="warning", source="a", title="w", dedupe_key=uuid.uuid4().hex),
        AlertRaised(level="error", source="a", title="e", dedupe_key=uuid.uuid4().hex),
        AlertRaised(level="critical", source="a", title="c"),  # no route configured
    )
    await platforms.feishu.wait_until(lambda: len(platforms.feishu.deliveries) >= 2, 20)
    await drained(bus.js, streams.ALERTS.name, "notifier-alerts")
    colours = {
        d.content["header"]["title"]["content"]: d.content["header"]["template"]
        for d in platforms.feishu.deliveries
    }
    assert colours == {"[WARNING] w": "yellow", "[ERROR] e": "orange"}
