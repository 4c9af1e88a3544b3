"""The ``delivery_state`` bucket: one record per outgoing message, written with the revision
read before as a fencing token, so two workers (or one that woke up after ``ack_wait``) can
never both claim the same send.

Every write is an fsynced JetStream write: a send's record is created in the state it needs
(``sending``, by an atomic create, so at most one worker claims it) rather than first as
``pending`` and then claimed."""

from __future__ import annotations

import msgspec
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.contracts.streams import DELIVERY_STATE_KV
from zhongshu.notifier.domain import DeliveryRecord
from zhongshu.runtime.bus import Publisher

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeliveryRecord).decode


class Fenced(Exception):
    """Another worker wrote the record since we read it: it owns this send now."""


# JetStream's header for an optimistic write: refused unless the key's last revision is this.
EXPECTED_REVISION = "Nats-Expected-Last-Subject-Sequence"


class Ledger:
    """Reads through nats-py's ``KeyValue``; writes, when a ``publisher`` is given, through the
    runtime's PubAck inbox (the same ``$KV`` message with the same expected-revision header,
    about a third of nats-py's Python per awaited write: two per reply, on every reply)."""

    def __init__(
        self,
        kv: KeyValue,
        publisher: Publisher | None = None,
        *,
        bucket: str = DELIVERY_STATE_KV.bucket,
    ) -> None:
        self._kv = kv
        self._publisher = publisher
        self._prefix = f"$KV.{bucket}."

    async def read(self, key: str) -> tuple[DeliveryRecord, int] | None:
        """The record and its revision, or None when there is none yet."""
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:  # deleted or purged ones too
            return None
        if not entry.value:
            return None
        return _decode(entry.value), int(entry.revision or 0)

    async def open(self, key: str) -> tuple[DeliveryRecord, int]:
        """The record and its revision, creating it as ``pending`` on first sight (the
        callbacks' flow; replies claim theirs with :meth:`claim`)."""
        found = await self.read(key)
        if found is not None:
            return found
        record, revision, _ = await self.claim(key, DeliveryRecord(state="pending"))
        return record, revision

    async def claim(self, key: str, record: DeliveryRecord) -> tuple[DeliveryRecord, int, bool]:
        """Create ``record`` (one write) unless the key has one: (the record, its revision,
        True) when this call created it, else (the record found, its revision, False)."""
        for _ in range(3):
            try:
                return record, await self._put(key, _encode(record), 0), True
            except (KeyWrongLastSequenceError, BadRequestError):
                pass
            found = await self.read(key)
            if found is not None:
                return (*found, False)
            # Gone again between the two calls (expired): try the create once more.
        raise Fenced(f"delivery record {key} keeps changing")

    async def write(self, key: str, record: DeliveryRecord, revision: int) -> int:
        """Replace the record if it is still at ``revision``; the new revision is the next
        fencing token. Raises :class:`Fenced` otherwise."""
        try:
            return await self._put(key, _encode(record), revision)
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise Fenced(f"delivery record {key} moved past revision {revision}") from exc

    async def _put(self, key: str, value: bytes, last: int) -> int:
        """Write ``value`` if the key is at revision ``last`` (0: has none); its new revision.
        JetStream refuses otherwise with error 10071, a ``BadRequestError`` here."""
        if self._publisher is None:
            if last == 0:
                return int(await self._kv.create(key, value))
            return int(await self._kv.update(key, value, last=last))
        ack = await self._publisher.publish_record(
            self._prefix + key, value, headers={EXPECTED_REVISION: str(last)}
        )
        return int((await ack).seq)
