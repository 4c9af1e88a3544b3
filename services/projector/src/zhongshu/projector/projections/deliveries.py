"""DELIVERIES (``delivery.<status>.<platform>.<tenant>``) → ``deliveries`` (what happened to each
chunk of each reply the notifier sent) and ``callback_deliveries`` (the delivery log of
subscriptions: one row per subscription and posted event). The newest outcome of a reply or
callback wins; an older one redelivered later changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncpg

from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    CallbackDelivered,
    CallbackDeliveryFailed,
    ReplyDelivered,
    ReplyDeliveryFailed,
)
from zhongshu.projector.projections import Applied, Projection, rounds, written
from zhongshu.projector.records import Record, decode_known


@dataclass(frozen=True, slots=True)
class DeliveryChange:
    table: str
    args: tuple[Any, ...]
    """The row's columns, in the order of its table's upsert; its key comes first."""

    @property
    def key(self) -> tuple[Any, ...]:
        return self.args[: KEY_COLUMNS[self.table]]


# Each upsert takes the batch's rows as arrays (one statement and one round trip per batch, not
# per message); a row changed twice in a batch goes into the next statement (`rounds`).
REPLY = """
INSERT INTO deliveries AS d (
    reply_id, chunk_index, tenant, platform, app, chat_id, status, reason, code, attempts,
    platform_message_id, at, last_seq)
SELECT * FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::integer[], $11::text[],
                     $12::timestamptz[], $13::bigint[])
ON CONFLICT (reply_id, chunk_index) DO UPDATE SET
    tenant = EXCLUDED.tenant,
    platform = EXCLUDED.platform,
    app = COALESCE(NULLIF(EXCLUDED.app, ''), d.app),
    chat_id = COALESCE(NULLIF(EXCLUDED.chat_id, ''), d.chat_id),
    status = EXCLUDED.status,
    reason = EXCLUDED.reason,
    code = EXCLUDED.code,
    attempts = EXCLUDED.attempts,
    platform_message_id = COALESCE(EXCLUDED.platform_message_id, d.platform_message_id),
    at = EXCLUDED.at,
    last_seq = EXCLUDED.last_seq
WHERE d.last_seq < EXCLUDED.last_seq
"""

CALLBACK = """
INSERT INTO callback_deliveries AS c (
    tenant, subscription_id, event_id, event_type, status, status_code, reason, attempts, at,
    last_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[],
                     $7::text[], $8::integer[], $9::timestamptz[], $10::bigint[])
ON CONFLICT (tenant, subscription_id, event_id) DO UPDATE SET
    event_type = EXCLUDED.event_type,
    status = EXCLUDED.status,
    status_code = EXCLUDED.status_code,
    reason = EXCLUDED.reason,
    attempts = EXCLUDED.attempts,
    at = EXCLUDED.at,
    last_seq = EXCLUDED.last_seq
WHERE c.last_seq < EXCLUDED.last_seq
"""

UPSERTS = {"deliveries": REPLY, "callback_deliveries": CALLBACK}
KEY_COLUMNS = {"deliveries": 2, "callback_deliveries": 3}


def plan(record: Record) -> list[DeliveryChange]:
    env = decode_known(record)
    if env is None:
        return []
    event, seq = env.data, record.seq
    tenant = env.tenant or record.token(3)
    match event:
        case ReplyDelivered():
            args: tuple[Any, ...] = (
                event.reply_id, event.chunk_index, tenant, event.platform, event.app,
                event.chat_id, "delivered", None, None, event.attempts,
                event.platform_message_id, event.delivered_at, seq,
            )  # fmt: skip
            return [DeliveryChange("deliveries", args)]
        case ReplyDeliveryFailed():
            status = "ambiguous" if event.ambiguous else "failed"
            args = (
                event.reply_id, event.chunk_index, tenant, event.platform, event.app,
                event.chat_id, status, event.reason, event.code, event.attempts, None,
                env.time, seq,
            )  # fmt: skip
            return [DeliveryChange("deliveries", args)]
        case CallbackDelivered():
            args = (
                event.tenant, event.subscription_id, event.event_id, event.event_type,
                "delivered", event.status_code, None, event.attempts, event.delivered_at, seq,
            )  # fmt: skip
            return [DeliveryChange("callback_deliveries", args)]
        case CallbackDeliveryFailed():
            args = (
                event.tenant, event.subscription_id, event.event_id, event.event_type, "failed",
                event.status_code, event.reason, event.attempts, env.time, seq,
            )  # fmt: skip
            return [DeliveryChange("callback_deliveries", args)]
    return []


class DeliveriesProjection(Projection[DeliveryChange]):
    stream: ClassVar[str] = streams.DELIVERIES.name
    durable: ClassVar[str] = "projector-deliveries"
    subjects: ClassVar[tuple[str, ...]] = (subjects.ALL_DELIVERIES,)
    tables: ClassVar[tuple[str, ...]] = ("deliveries", "callback_deliveries")

    def plan(self, record: Record) -> list[DeliveryChange]:
        return plan(record)

    async def apply(
        self, conn: asyncpg.Connection, change: DeliveryChange, applied: Applied
    ) -> None:
        await self.apply_all(conn, [change], applied)

    async def apply_all(
        self, conn: asyncpg.Connection, changes: Sequence[DeliveryChange], applied: Applied
    ) -> None:
        """Each table's rows in as few upserts as their keys allow (the tables are independent,
        and a row's own changes keep their order)."""
        for table, upsert in UPSERTS.items():
            mine = [c for c in changes if c.table == table]
            for group in rounds(mine, key=lambda c: c.key):
                columns = zip(*(c.args for c in group), strict=True)
                applied.rows[table] += written(await conn.execute(upsert, *map(list, columns)))
