"""Workflow definitions from the `workflows` bucket: the current one when a run starts, and the
exact revision a run started with while it goes on (so an edit never changes a running DAG)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import msgspec
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from zhongshu.contracts.definitions import WorkflowDefinition, definition_key

CACHED_REVISIONS = 256
"""A revision never changes, so caching one is safe on every replica."""


class DefinitionMissing(LookupError):
    """No usable definition: the reason says which and why."""


@dataclass(frozen=True)
class LoadedDefinition:
    definition: WorkflowDefinition
    revision: int


class DefinitionStore:
    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._cache: OrderedDict[tuple[str, int], WorkflowDefinition] = OrderedDict()

    async def load(self, tenant: str, name: str, revision: int | None = None) -> LoadedDefinition:
        """The definition now (or at ``revision``); :class:`DefinitionMissing` otherwise."""
        try:
            key = definition_key(tenant, name)
        except ValueError as exc:
            raise DefinitionMissing(f"no workflow {name!r}: {exc}") from None
        if revision is not None and (key, revision) in self._cache:
            self._cache.move_to_end((key, revision))
            return LoadedDefinition(self._cache[(key, revision)], revision)
        try:
            entry = await self._bucket.get(key, revision=revision)
        except NotFoundError:
            where = f" at revision {revision}" if revision is not None else ""
            raise DefinitionMissing(
                f"workflow {name!r} of tenant {tenant!r} does not exist{where}"
            ) from None
        if entry.key != key or not entry.value or entry.revision is None:
            raise DefinitionMissing(f"workflow {name!r} has no revision {revision}")
        try:
            definition = msgspec.json.decode(entry.value, type=WorkflowDefinition)
        except msgspec.DecodeError as exc:
            raise DefinitionMissing(f"workflow {name!r} is not a valid definition: {exc}") from None
        if definition.tenant != tenant or definition.id != name:
            raise DefinitionMissing(f"workflow {name!r} is stored under the wrong key {key}")
        self._cache[(key, entry.revision)] = definition
        if len(self._cache) > CACHED_REVISIONS:
            self._cache.popitem(last=False)
        return LoadedDefinition(definition, entry.revision)
