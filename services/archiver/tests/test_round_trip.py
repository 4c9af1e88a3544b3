"""The archive end to end on a real JetStream: 100,000 events in three streams over two months
are archived into monthly objects, verify finds nothing wrong, and a restore into fresh streams
yields the same envelopes, headers and subjects in the original order; restoring again stores
nothing new."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from nats.js.api import StreamConfig

from services.archiver.tests.archiver_testing import (
    Bus,
    archived_lines,
    envelope_bytes,
    publish_events,
    settings,
    start_archiver,
    stop_quietly,
    stream_payloads,
    wait_archived,
)
from zhongshu.archiver import catalog, restore, verify
from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.layout import Month
from zhongshu.contracts import headers as H

COUNTS = {"CHAT_INBOUND": 40_000, "TASKS": 30_000, "EVENTS": 30_000}
JAN, FEB = Month(2025, 1), Month(2025, 2)


async def test_100k_events_archive_verify_clean_and_restore_in_order(
    bus: Bus, store: ObjectStore, archive_dir: Path
) -> None:
    published = dict(
        zip(
            COUNTS,
            await asyncio.gather(*(publish_events(bus.js, s, n) for s, n in COUNTS.items())),
            strict=True,
        )
    )
    service = await start_archiver(
        settings(bus.url, archive_dir.as_uri(), COUNTS, archive_chunk_max_events=20_000)
    )
    try:
        archived = await wait_archived(bus.js, COUNTS)
    finally:
        await stop_quietly(service)
    assert archived == COUNTS

    # Two monthly partitions per stream, late January events included in January.
    summaries = await catalog.months(store)
    assert {(s.stream, s.month) for s in summaries} == {(s, m) for s in COUNTS for m in (JAN, FEB)}
    for stream, count in COUNTS.items():
        assert sum(s.events for s in summaries if s.stream == stream) == count

    report = await verify.verify(store, await verify.plan(store, None, None), whole_streams=True)
    assert report.problems == []
    assert {s: r.events for s, r in report.streams.items()} == COUNTS
    assert all(r.chunks_checked for r in report.streams.values())

    for stream, payloads in published.items():
        lines = await archived_lines(store, stream)
        assert [line.seq for line in lines] == list(range(1, COUNTS[stream] + 1))
        assert [line.payload() for line in lines] == payloads

    async def restore_into_fresh_stream(stream: str) -> None:
        prefix = f"restored.{stream.lower()}"
        await bus.js.add_stream(StreamConfig(name=f"RESTORED_{stream}", subjects=[f"{prefix}.>"]))
        plan = await restore.plan(store, stream, JAN, FEB)
        result = await restore.restore(bus.nc, bus.js, store, plan, restore.into(f"{prefix}.>"))
        assert (result.read, result.published, result.failed) == (COUNTS[stream], COUNTS[stream], 0)
        original = await stream_payloads(bus.js, stream)
        restored = await stream_payloads(bus.js, f"RESTORED_{stream}")
        assert [(f"{prefix}.{subject}", data, msg_id) for subject, data, msg_id in original] == (
            restored
        )

    await asyncio.gather(*(restore_into_fresh_stream(stream) for stream in COUNTS))

    # Replaying again changes nothing: every message is dropped by its original Nats-Msg-Id.
    plan = await restore.plan(store, "EVENTS", JAN, FEB)
    again = await restore.restore(bus.nc, bus.js, store, plan, restore.into("restored.events.>"))
    assert (again.published, again.duplicates) == (0, COUNTS["EVENTS"])
    info = await bus.js.stream_info("RESTORED_EVENTS")
    assert info.state.messages == COUNTS["EVENTS"]


async def test_restored_messages_keep_their_headers_and_lose_server_ones(
    bus: Bus, store: ObjectStore, archive_dir: Path
) -> None:
    await publish_events(bus.js, "TASKS", 10)
    service = await start_archiver(settings(bus.url, archive_dir.as_uri(), ["TASKS"]))
    try:
        await wait_archived(bus.js, ["TASKS"])
    finally:
        await stop_quietly(service)
    await bus.js.add_stream(StreamConfig(name="ONE_SUBJECT", subjects=["restored.one"]))
    plan = await restore.plan(store, "TASKS", JAN, FEB)
    result = await restore.restore(bus.nc, bus.js, store, plan, restore.into("restored.one"))
    assert result.published == 10
    msg = await bus.js.get_msg("ONE_SUBJECT", 1)
    headers = msg.headers or {}
    assert headers[H.MSG_ID] == "tasks-0000000"
    assert headers[H.TRACEPARENT].startswith("00-0af7651916cd43dd8448eb211c80319c")
    assert headers[H.CONTENT_TYPE] == H.CLOUDEVENTS_JSON


async def test_months_follow_event_time_in_the_archive_time_zone_and_late_events_join_theirs(
    bus: Bus, store: ObjectStore, archive_dir: Path
) -> None:
    def envelope(i: int, moment: datetime) -> bytes:
        return envelope_bytes("EVENTS", i, moment)[1]

    bodies = [
        envelope(1, datetime(2025, 1, 31, 20, 0, tzinfo=UTC)),  # Feb 1, 04:00 in Shanghai
        envelope(2, datetime(2025, 2, 1, 10, 0, tzinfo=UTC)),
        envelope(3, datetime(2025, 1, 15, 9, 0, tzinfo=UTC)),  # late: back to January
        b"\x00not an envelope",  # no event time: the publish time decides
    ]
    for i, body in enumerate(bodies):
        await bus.js.publish("events.ops.late", body, headers={H.MSG_ID: f"late-{i}"})
    service = await start_archiver(
        settings(bus.url, archive_dir.as_uri(), ["EVENTS"], archive_tz="Asia/Shanghai")
    )
    try:
        await wait_archived(bus.js, ["EVENTS"])
    finally:
        await stop_quietly(service)
    by_month = {
        str(s.month): [
            seq for o in s.manifest.objects for seq in range(o.first_seq, o.last_seq + 1)
        ]
        for s in await catalog.months(store, "EVENTS")
    }
    now = Month.of(datetime.now(UTC), ZoneInfo("Asia/Shanghai"))
    assert by_month == {"2025-01": [3], "2025-02": [1, 2], str(now): [4]}
    lines = await archived_lines(store, "EVENTS")
    assert [line.payload() for line in lines] == bodies
