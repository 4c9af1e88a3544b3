"""The ``delivery_state`` bucket: one record per outgoing message, written with the revision
read before as a fencing token, so two workers (or one that woke up after ``ack_wait``) can
never both claim the same send."""

from __future__ import annotations

import msgspec
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.notifier.domain import DeliveryRecord

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeliveryRecord).decode


class Fenced(Exception):
    """Another worker wrote the record since we read it: it owns this send now."""


class Ledger:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def open(self, key: str) -> tuple[DeliveryRecord, int]:
        """The record and its revision, creating it as ``pending`` on first sight."""
        for _ in range(3):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                entry = None
            if entry is not None and entry.value:
                return _decode(entry.value), int(entry.revision or 0)
            record = DeliveryRecord(state="pending")
            try:
                return record, int(await self._kv.create(key, _encode(record)))
            except (KeyWrongLastSequenceError, BadRequestError):
                continue  # created by another worker in between: read theirs
        raise Fenced(f"delivery record {key} keeps changing")

    async def write(self, key: str, record: DeliveryRecord, revision: int) -> int:
        """Replace the record if it is still at ``revision``; the new revision is the next
        fencing token. Raises :class:`Fenced` otherwise."""
        try:
            return int(await self._kv.update(key, _encode(record), last=revision))
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise Fenced(f"delivery record {key} moved past revision {revision}") from exc
