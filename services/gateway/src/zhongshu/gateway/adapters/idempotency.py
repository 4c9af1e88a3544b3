"""`Idempotency-Key` memory in the `dedupe` KV bucket (same durability as the streams, keys kept
48 h): an atomic create of `idem.<tenant>.<sha256 of the key>` decides which request owns a key,
and the record keeps the task's exact envelope so a retry republishes the same bytes."""

from __future__ import annotations

import contextlib
import hashlib

import msgspec
import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.gateway.adapters import Unavailable


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a key was first used for."""

    task_id: str
    fingerprint: str
    """sha256 of the operation and its canonical body: a different request under a used key."""
    envelope: bytes
    published: bool = False


def kv_key(tenant: str, key: str) -> str:
    """KV keys allow few characters and clients choose theirs freely: hash it, scope by tenant."""
    return f"idem.{tenant}.{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


class IdempotencyStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._decoder = msgspec.json.Decoder(IdempotencyRecord)

    async def get(self, tenant: str, key: str) -> tuple[IdempotencyRecord, int] | None:
        try:
            entry = await self._kv.get(kv_key(tenant, key))
        except KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the bus (NATS) cannot read idempotency keys") from exc
        if entry.value is None:
            return None
        return self._decoder.decode(entry.value), entry.revision or 0

    async def claim(self, tenant: str, key: str, record: IdempotencyRecord) -> int | None:
        """Create the key for ``record``; None when another request already holds it."""
        try:
            return await self._kv.create(kv_key(tenant, key), msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the bus (NATS) cannot record idempotency keys") from exc

    async def mark_published(
        self, tenant: str, key: str, record: IdempotencyRecord, revision: int
    ) -> None:
        """Best effort: a record left unpublished only makes a retry publish again, which the
        duplicate window (or the agent, by task id) absorbs."""
        done = msgspec.structs.replace(record, published=True)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._kv.update(kv_key(tenant, key), msgspec.json.encode(done), last=revision)
