"""What the definition resources (workflows, triggers, subscriptions) share: reading one that
must exist, and writing with the bucket's optimistic concurrency mapped to 404/409."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from zhongshu.gateway.adapters.definitions import DefinitionConflict, DefinitionStore, Stored
from zhongshu.gateway.problems import ProblemError

D = TypeVar("D", bound=msgspec.Struct)


async def existing(store: DefinitionStore[D], tenant: str, definition_id: str) -> Stored[D]:
    found = await store.get(tenant, definition_id)
    if found is None:
        raise ProblemError(404, f"no such {store.name}", kind="not-found")
    return found


async def create(store: DefinitionStore[D], tenant: str, definition_id: str, value: D) -> int:
    try:
        return await store.create(tenant, definition_id, value)
    except DefinitionConflict:
        raise ProblemError(
            409, f"{store.name} {definition_id!r} exists; PUT replaces it", kind="conflict"
        ) from None


async def replace(store: DefinitionStore[D], tenant: str, definition_id: str, value: D) -> int:
    current = await existing(store, tenant, definition_id)
    try:
        return await store.update(tenant, definition_id, value, current.revision)
    except DefinitionConflict:
        raise ProblemError(
            409, f"{store.name} {definition_id!r} changed meanwhile; read it again", kind="conflict"
        ) from None


async def delete(store: DefinitionStore[D], tenant: str, definition_id: str) -> None:
    current = await existing(store, tenant, definition_id)
    try:
        await store.delete(tenant, definition_id, current.revision)
    except DefinitionConflict:
        raise ProblemError(
            409, f"{store.name} {definition_id!r} changed meanwhile; read it again", kind="conflict"
        ) from None
