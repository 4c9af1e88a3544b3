"""Definitions in their JetStream KV buckets (`workflows`, `triggers`, `subscriptions`) as JSON
under `<tenant>.<id>`; the task engine and the notifier watch the buckets, so a write here takes
effect there without a restart. A key's revision is the definition's version."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
import nats.errors
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.contracts.definitions import definition_key
from zhongshu.gateway.adapters import Unavailable

log = logging.getLogger("zhongshu.gateway.definitions")

D = TypeVar("D", bound=msgspec.Struct)


class DefinitionConflict(Exception):
    """It exists (create) or changed since it was read (update, delete)."""


@dataclass(frozen=True)
class Stored(Generic[D]):
    definition: D
    revision: int


class DefinitionStore(Generic[D]):
    def __init__(self, kv: KeyValue, kind: type[D], name: str) -> None:
        self._kv = kv
        self._decoder = msgspec.json.Decoder(kind)
        self.name = name
        """What the bucket holds, for messages (`workflow`, `trigger`...)."""

    async def get(self, tenant: str, definition_id: str) -> Stored[D] | None:
        try:
            entry = await self._kv.get(definition_key(tenant, definition_id))
        except KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the bus (NATS) cannot read {self.name}s") from exc
        if entry.value is None:
            return None
        return Stored(self._decode(entry.value), entry.revision or 0)

    async def list(self, tenant: str) -> list[Stored[D]]:
        """Every current definition of the tenant, by id."""
        found: list[Stored[D]] = []
        try:
            # A short inactivity threshold: the server drops this one-off consumer soon after.
            watcher = await self._kv.watch(
                f"{tenant}.*", ignore_deletes=True, inactive_threshold=10.0
            )
            try:
                async for entry in watcher:
                    if entry is None:  # caught up with what is stored
                        break
                    if entry.value:
                        found.append(Stored(self._decode(entry.value), entry.revision or 0))
                    if not entry.delta:
                        break
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the bus (NATS) cannot list {self.name}s") from exc
        return found

    async def create(self, tenant: str, definition_id: str, definition: D) -> int:
        try:
            return await self._kv.create(
                definition_key(tenant, definition_id), msgspec.json.encode(definition)
            )
        except KeyWrongLastSequenceError:
            raise DefinitionConflict(definition_id) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the bus (NATS) did not store the {self.name}") from exc

    async def update(self, tenant: str, definition_id: str, definition: D, revision: int) -> int:
        try:
            return await self._kv.update(
                definition_key(tenant, definition_id),
                msgspec.json.encode(definition),
                last=revision,
            )
        except KeyWrongLastSequenceError:
            raise DefinitionConflict(definition_id) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the bus (NATS) did not store the {self.name}") from exc

    async def delete(self, tenant: str, definition_id: str, revision: int) -> None:
        try:
            await self._kv.delete(definition_key(tenant, definition_id), last=revision)
        except APIError as exc:
            if exc.err_code in (10071, 10164):
                raise DefinitionConflict(definition_id) from None
            raise Unavailable(f"the bus (NATS) did not delete the {self.name}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the bus (NATS) did not delete the {self.name}") from exc

    def _decode(self, raw: bytes) -> D:
        return self._decoder.decode(raw)
