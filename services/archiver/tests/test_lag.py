"""The retention guard on a real JetStream: with the archiver's drain stopped, the lag of a
stream with a small max_age is exported and raises a warning, then an error, while its oldest
event is still on the bus; repeated checks raise nothing more. Time is given to the monitor
(``now``), so no test waits for a clock."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.js.api import StreamConfig
from prometheus_client import REGISTRY

from services.archiver.tests.archiver_testing import Bus, settings, start_archiver, stop_quietly
from zhongshu.archiver.adapters.statekv import StateStore
from zhongshu.archiver.alerts import Alerts
from zhongshu.archiver.lag import LagMonitor
from zhongshu.archiver.main import build_service
from zhongshu.contracts import envelope as wire
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AlertRaised
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import collect
from zhongshu.runtime.bus import Publisher
from zhongshu.runtime.errors import RuntimeFailure

MAX_AGE_S = 60.0


async def alerts_raised(bus: Bus) -> list[Envelope[AlertRaised]]:
    msgs = await collect(bus.js, "alert.*.archiver", within_s=1.0)
    return [wire.decode(m.data, AlertRaised) for m in msgs]


async def test_stopped_archiver_raises_warning_then_error_before_events_age_out(bus: Bus) -> None:
    await bus.js.add_stream(
        StreamConfig(name="TINY", subjects=["tiny.>"], max_age=MAX_AGE_S, duplicate_window=1)
    )
    ack = await bus.js.publish("tiny.a", b'{"hello": 1}')
    stored = await bus.js.get_msg("TINY", ack.seq)
    assert stored.time is not None
    born = stored.time.timestamp()
    monitor = LagMonitor(
        bus.js,
        await StateStore.open(bus.js),
        Alerts(Publisher(bus.js), window_s=3600),
        ["TINY"],
        warning_ratio=0.5,
        error_ratio=0.8,
    )

    quiet = await monitor.check(now=born + 0.4 * MAX_AGE_S)
    assert [(lag.messages, lag.limit) for lag in quiet] == [(1, "max_age")]
    assert await alerts_raised(bus) == []

    await monitor.check(now=born + 0.55 * MAX_AGE_S)
    await monitor.check(now=born + 0.85 * MAX_AGE_S)
    for _ in range(3):  # later checks in the same window add nothing
        await monitor.check(now=born + 0.9 * MAX_AGE_S)
    raised = await alerts_raised(bus)
    assert [(a.data.level, a.data.labels["stream"]) for a in raised] == [
        ("warning", "TINY"),
        ("error", "TINY"),
    ]
    assert "max_age" in raised[1].data.detail
    # ... and the event the alerts are about has not left the stream.
    assert (await bus.js.get_msg("TINY", ack.seq)).data == b'{"hello": 1}'
    sample = REGISTRY.get_sample_value("zhongshu_archiver_retention_used_ratio", {"stream": "TINY"})
    assert sample is not None
    assert 0.85 <= sample < 1

    # A restarted monitor (or a second replica) publishes the same ids: JetStream drops them.
    again = LagMonitor(
        bus.js,
        await StateStore.open(bus.js),
        Alerts(Publisher(bus.js), window_s=3600),
        ["TINY"],
        warning_ratio=0.5,
        error_ratio=0.8,
    )
    await again.check(now=born + 0.9 * MAX_AGE_S)
    assert len(await alerts_raised(bus)) == 2


async def test_archived_events_are_not_lag(bus: Bus) -> None:
    await bus.js.add_stream(
        StreamConfig(name="TINY2", subjects=["tiny2.>"], max_age=MAX_AGE_S, duplicate_window=1)
    )
    ack = await bus.js.publish("tiny2.a", b"{}")
    states = await StateStore.open(bus.js)
    monitor = LagMonitor(
        bus.js,
        states,
        Alerts(Publisher(bus.js), window_s=3600),
        ["TINY2"],
        warning_ratio=0.5,
        error_ratio=0.8,
    )
    state = await states.load("TINY2")
    await states.commit(state, ack.seq)  # as the drain records a committed chunk
    (lag,) = await monitor.check(now=time.time() + 0.99 * MAX_AGE_S)
    assert (lag.messages, lag.ratio) == (0, 0.0)
    assert await alerts_raised(bus) == []


async def test_monitor_only_service_exports_the_lag_of_every_stream(bus: Bus) -> None:
    for i in range(5):
        await bus.js.publish("events.ops.x", msgspec.json.encode({"i": i}))
    service = await start_archiver(
        settings(
            bus.url,
            "memory://",
            ["EVENTS"],
            archive_drain=False,
            archive_lag_check_interval_s=0.05,
        )
    )
    try:
        for _ in range(200):
            value = REGISTRY.get_sample_value(
                "zhongshu_archiver_lag_messages", {"stream": "EVENTS"}
            )
            if value == 5:
                break
            await asyncio.sleep(0.05)
        assert value == 5
    finally:
        await stop_quietly(service)


async def test_a_stream_that_was_never_provisioned_stops_the_start_with_the_fix(
    fast_nats_server: NatsServer,
) -> None:
    # A bare server: no stream, no bucket.
    service = build_service()
    with pytest.raises(RuntimeFailure, match="run `zhongshu provision`"):
        await service.start(settings(fast_nats_server.url, "memory://", ["TASKS"]))
    await stop_quietly(service)
