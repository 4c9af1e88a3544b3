"""The drain's pulls: what the stream holds comes in one answer, and the pull does not linger
for what is published later (a caught-up drain pauses between pulls instead)."""

from __future__ import annotations

from services.archiver.tests.archiver_testing import Bus, publish_events
from zhongshu.archiver.adapters.puller import BatchPuller
from zhongshu.contracts.streams import CHAT_INBOUND

STREAM = CHAT_INBOUND.name


async def test_a_pull_returns_what_the_stream_holds_and_an_empty_one_returns_nothing(
    bus: Bus,
) -> None:
    await publish_events(bus.js, STREAM, 30)
    puller = BatchPuller(bus.nc, bus.js, STREAM, ack_wait_s=60, max_ack_pending=1_000)
    await puller.bind(1)
    try:
        first = await puller.pull(20)
        rest = await puller.pull(100)
        empty = await puller.pull(100)
        await publish_events(bus.js, STREAM, 5, start=30)
        later = await puller.pull(100)
    finally:
        await puller.close()
    seqs = [int(m.metadata.sequence.stream) for m in (*first, *rest)]
    assert seqs == list(range(1, 31))
    assert empty == []
    assert [int(m.metadata.sequence.stream) for m in later] == list(range(31, 36))
