"""The delivery ledger written through the runtime's PubAck inbox fences like nats-py's
``KeyValue``: one create wins, a write at a stale revision is refused, and the record read back
is the one written. Both write paths, on a real JetStream."""

from __future__ import annotations

import pytest

from services.notifier.tests.notifier_testing import Bus
from zhongshu.contracts.streams import DELIVERY_STATE_KV
from zhongshu.notifier.adapters.ledger import Fenced, Ledger
from zhongshu.notifier.domain import DeliveryRecord
from zhongshu.runtime.bus import Publisher

SENDING = DeliveryRecord(state="sending", attempts=1)
DELIVERED = DeliveryRecord(state="delivered", attempts=1, platform_message_id="om_1")


@pytest.fixture(params=["runtime-inbox", "nats-py"])
async def ledger(request: pytest.FixtureRequest, bus: Bus) -> Ledger:
    kv = await bus.js.key_value(DELIVERY_STATE_KV.bucket)
    if request.param == "nats-py":
        return Ledger(kv)
    # Its inbox subscription closes with the bus fixture's connection.
    return Ledger(kv, Publisher.on(bus.nc, bus.js))


async def test_only_the_first_claim_creates_the_record(ledger: Ledger) -> None:
    first = await ledger.claim("k-first", SENDING)
    second = await ledger.claim("k-first", DeliveryRecord(state="pending"))
    assert first[2] is True
    assert second == (SENDING, first[1], False)


async def test_a_write_at_a_stale_revision_is_fenced(ledger: Ledger) -> None:
    _, revision, _ = await ledger.claim("k-fenced", SENDING)
    newer = await ledger.write("k-fenced", DELIVERED, revision)
    assert newer > revision
    with pytest.raises(Fenced):
        await ledger.write("k-fenced", DeliveryRecord(state="failed"), revision)
    assert await ledger.read("k-fenced") == (DELIVERED, newer)
