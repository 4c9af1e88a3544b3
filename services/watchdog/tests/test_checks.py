"""What the watchdog raises, on a real JetStream with real service processes: a killed service,
a process burning CPU, a non-empty DLQ, a growing backlog, the host above its threshold, a
break in the audit trail. Thresholds are lowered to seconds; waits are generous bounds."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from nats.js.api import ConsumerConfig

from services.watchdog.tests.conftest import Bus
from services.watchdog.tests.watchdog_testing import (
    FAST,
    WAIT_S,
    ServiceProcess,
    beating,
    start_watchdog,
)
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.events.alerts import alert_key
from zhongshu.devstack.testing import eventually
from zhongshu.runtime import liveconfig
from zhongshu.watchdog.main import build_service
from zhongshu.watchdog.settings import WatchdogSettings

HERE = Path(__file__).parent


def _echo(url: str) -> ServiceProcess:
    return ServiceProcess(["-m", "zhongshu.echo.main"], {"ZHONGSHU_NATS_URL": url}, "echo")


async def test_a_killed_service_raises_an_error_and_its_return_resolves_it(bus: Bus) -> None:
    echo = await _echo(bus.url).wait_ready()
    watchdog = await start_watchdog(bus.url)
    try:
        await beating(bus.js, "echo")
        echo.kill()
        down = await eventually(
            lambda: bus.recorder.alerts("service.down", service="echo"), "echo down", WAIT_S
        )
        assert down[0].level == "error"
        assert down[0].source == "watchdog"
        assert down[0].title == "echo is down"

        echo = await _echo(bus.url).wait_ready()
        resolved = await eventually(
            lambda: bus.recorder.states(alert_key(down[0]), "resolved"), "resolved", WAIT_S
        )
        assert resolved[0].actor is None
        assert "cleared" in resolved[0].reason
        assert len(bus.recorder.alerts("service.down", service="echo")) == 1
    finally:
        echo.kill()
        await watchdog.stop()


async def test_a_process_burning_cpu_raises_a_warning(bus: Bus) -> None:
    burner = await ServiceProcess([str(HERE / "burner.py"), bus.url], {}, "burner").wait_ready()
    watchdog = await start_watchdog(bus.url, FAST.model_copy(update={"process_cpu_percent": 20}))
    try:
        busy = await eventually(
            lambda: bus.recorder.alerts("service.cpu", service="burner"), "a CPU warning", WAIT_S
        )
        assert busy[0].level == "warning"
        assert "burner" in busy[0].title
    finally:
        burner.kill()
        await watchdog.stop()


async def test_a_dead_letter_raises_an_error_until_the_dlq_is_empty(bus: Bus) -> None:
    watchdog = await start_watchdog(bus.url)
    try:
        await bus.js.publish(subjects.dlq("CHAT_INBOUND", "router"), b"{}")
        raised = await eventually(lambda: bus.recorder.alerts("bus.dlq"), "a DLQ alert", WAIT_S)
        assert raised[0].level == "error"
        await bus.js.purge_stream(streams.DLQ.name)
        await eventually(
            lambda: bus.recorder.states(alert_key(raised[0]), "resolved"), "resolved", WAIT_S
        )
    finally:
        await watchdog.stop()


async def test_a_backlog_growing_for_the_window_raises_a_warning(bus: Bus) -> None:
    durable = "stuck-" + uuid.uuid4().hex[:6]
    await bus.js.add_consumer(
        streams.EVENTS.name, ConsumerConfig(durable_name=durable, filter_subject="events.>")
    )
    watchdog = await start_watchdog(bus.url)
    try:

        async def publish_and_look() -> bool:
            await bus.js.publish("events.team.thing", b"{}")
            return bool(bus.recorder.alerts("bus.lag", consumer=durable))

        await eventually(publish_and_look, "a lag warning", WAIT_S)
    finally:
        await watchdog.stop()


async def test_the_host_above_its_threshold_raises_warnings(bus: Bus, tmp_path: Path) -> None:
    low = FAST.model_copy(update={"resource_percent": 0.001, "sustained_s": 0.5})
    watchdog = await start_watchdog(bus.url, low, disks=[tmp_path])
    try:
        memory = await eventually(
            lambda: bus.recorder.alerts("host.memory"), "a memory warning", WAIT_S
        )
        assert memory[0].level == "warning"
        await eventually(lambda: bus.recorder.alerts("host.disk"), "a disk warning", WAIT_S)
    finally:
        await watchdog.stop()


async def test_messages_deleted_from_the_audit_trail_raise_a_critical(bus: Bus) -> None:
    for i in range(3):
        event = AuditRecorded(
            actor="u", action="config.pushed", target="x", outcome="ok", tenant="acme"
        )
        env = wire.make_envelope(event, id=f"audit-{i}", source="test", tenant="acme")
        await bus.js.publish(subjects.audit("acme", "config"), wire.encode(env))
    watchdog = await start_watchdog(bus.url)
    try:
        await asyncio.sleep(1)  # a check takes the trail's mark
        info = await bus.js.stream_info(streams.AUDIT.name)
        await bus.js.delete_msg(streams.AUDIT.name, int(info.state.first_seq) + 1)
        broken = await eventually(
            lambda: bus.recorder.alerts("bus.audit"), "an audit-trail alert", WAIT_S
        )
        assert broken[0].level == "critical"
        assert "deleted from the middle" in broken[0].detail
    finally:
        await watchdog.stop()


async def _audit_security(bus: Bus, event: AuditRecorded) -> None:
    env = wire.make_envelope(event, id=uuid.uuid4().hex, source="test", tenant="")
    await bus.js.publish(subjects.audit("_", "security"), wire.encode(env))


async def test_refused_tokens_and_unknown_apps_from_one_source_are_critical(bus: Bus) -> None:
    watchdog = await start_watchdog(bus.url, FAST.model_copy(update={"unknown_app_requests": 3}))
    try:
        # The gateway audits refused tokens at most once a second, with how many they were.
        for count in ("12", "9"):
            await _audit_security(
                bus,
                AuditRecorded(
                    actor="10.1.2.3", action="gateway.token.rejected", target="api",
                    outcome="denied", tenant="", labels={"count": count},
                ),
            )  # fmt: skip
        jwt = await eventually(lambda: bus.recorder.alerts("security.jwt"), "a JWT burst", WAIT_S)
        assert (jwt[0].level, jwt[0].labels["remote"]) == ("critical", "10.1.2.3")

        for _ in range(3):
            await _audit_security(
                bus,
                AuditRecorded(
                    actor="10.9.9.9", action="dingtalk.webhook.rejected", target="nosuch",
                    outcome="denied", tenant="", labels={"reason": "unknown app"},
                ),
            )  # fmt: skip
        unknown = await eventually(
            lambda: bus.recorder.alerts("security.unknown_app"), "unknown apps", WAIT_S
        )
        assert unknown[0].labels == {
            "platform": "dingtalk", "remote": "10.9.9.9", "count": "3",
            "check": "security.unknown_app",
        }  # fmt: skip
        assert bus.recorder.alerts("security.signature") == []
    finally:
        await watchdog.stop()


async def test_a_request_to_an_internal_address_refused_by_the_hub_is_an_error(
    bus: Bus,
) -> None:
    watchdog = await start_watchdog(bus.url, FAST)
    try:
        await _audit_security(
            bus,
            AuditRecorded(
                actor="erp", action="callback.refused", target="http://169.254.169.254/",
                outcome="denied", tenant="acme",
                detail="169.254.169.254 is a link-local address (169.254.169.254); not allowed",
            ),
        )  # fmt: skip
        found = await eventually(
            lambda: bus.recorder.alerts("security.outbound"), "an outbound refusal", WAIT_S
        )
        assert (found[0].level, found[0].labels["platform"], found[0].labels["remote"]) == (
            "error",
            "acme",
            "erp",
        )
    finally:
        await watchdog.stop()


async def test_a_pushed_threshold_applies_without_a_restart(bus: Bus) -> None:
    quiet = "watchdog: {check_interval_s: 0.2, resource_percent: 100, sustained_s: 0}\n"
    await liveconfig.push(bus.js, quiet)
    watchdog = build_service()  # the live configuration, from the config bucket
    await watchdog.start(
        WatchdogSettings(nats_url=bus.url, watchdog_disks=[], heartbeat_interval_s=0)
    )
    try:
        await asyncio.sleep(1)
        assert bus.recorder.alerts("host.memory") == []
        loud = quiet.replace("resource_percent: 100", "resource_percent: 0.001")
        await liveconfig.push(bus.js, loud)
        await eventually(lambda: bus.recorder.alerts("host.memory"), "a memory warning", WAIT_S)
    finally:
        await watchdog.stop()


async def test_its_metrics_count_open_alerts_and_readyz_reports_the_checks(bus: Bus) -> None:
    watchdog = await start_watchdog(bus.url)
    try:
        await bus.js.publish(subjects.dlq("CHAT_INBOUND", "router"), b"{}")
        raised = await eventually(lambda: bus.recorder.alerts("bus.dlq"), "a DLQ alert", WAIT_S)
        base = f"http://127.0.0.1:{watchdog.health_port}"
        async with httpx.AsyncClient(base_url=base) as http:

            async def counted() -> bool:
                text = (await http.get("/metrics")).text
                return 'zhongshu_alerts_active{level="error"} 1.0' in text

            await eventually(counted, "the open error counted", WAIT_S)
            text = (await http.get("/metrics")).text
            assert 'zhongshu_watchdog_checks_total{check="bus",outcome="ok"}' in text
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"bus": True, "checks": True}
        assert raised[0].labels["messages"] == "1"
    finally:
        await watchdog.stop()
