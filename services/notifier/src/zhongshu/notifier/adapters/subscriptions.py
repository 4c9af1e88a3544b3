"""The callback subscriptions, held in memory and kept current by watching the ``subscriptions``
KV bucket: the gateway writes them, every notifier replica reads every key live, so matching an
event costs no I/O."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import msgspec
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.contracts.definitions import Subscription, definition_key
from zhongshu.contracts.streams import SUBSCRIPTIONS_KV
from zhongshu.runtime.buckets import WatchedBucket

log = logging.getLogger("zhongshu.notifier.subscriptions")

_decode = msgspec.json.Decoder(Subscription).decode


@dataclass(frozen=True)
class ActiveSubscription:
    subscription: Subscription
    since: datetime
    """When the key was created (the bus's clock). Events stored before it are not posted: a
    new subscription gets what happens from then on, not the stream's month of history (which
    a freshly created consumer would otherwise replay to it)."""


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def type_matches(pattern: str, event_type: str) -> bool:
    """``*`` matches any run of characters, dots included (``zhongshu.task.*`` matches
    ``zhongshu.task.task_started.v1``); everything else matches itself."""
    return _glob(pattern).fullmatch(event_type) is not None


def wants(subscription: Subscription, event_type: str) -> bool:
    return subscription.enabled and any(
        type_matches(pattern, event_type) for pattern in subscription.event_types
    )


def _decode_keyed(entry: KeyValue.Entry) -> Subscription:
    subscription = _decode(entry.value or b"")
    expected = definition_key(subscription.tenant, subscription.id)
    if expected != entry.key:
        # The key decides whose subscription it is: a value naming another tenant must not
        # receive that tenant's events.
        raise ValueError(f"its tenant and id say {expected}")
    return subscription


class SubscriptionDirectory:
    """Every subscription by tenant. ``ready`` turns true once the bucket has been read to its
    end; until then a handler must not conclude that an event has no subscribers."""

    def __init__(self, js: JetStreamContext) -> None:
        # History too: the first revision after a delete is the creation, which `since` needs.
        self._watched = WatchedBucket(
            js,
            SUBSCRIPTIONS_KV.bucket,
            decode_entry=_decode_keyed,
            include_history=True,
            name="subscriptions-watch",
        )
        self._by_tenant: dict[str, tuple[ActiveSubscription, ...]] = {}
        self._indexed_revision: int | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, *, wait_s: float) -> SubscriptionDirectory:
        """Start watching, and wait up to ``wait_s`` for the initial read (a slow read only
        delays callbacks: handlers retry while the directory is not ready)."""
        directory = cls(js)
        directory._watched.start()
        if not await directory._watched.wait_ready(wait_s):
            log.warning("subscriptions not read within %.0fs; callbacks wait for them", wait_s)
        return directory

    @property
    def ready(self) -> bool:
        return self._watched.ready.is_set()

    def for_tenant(self, tenant: str) -> tuple[ActiveSubscription, ...]:
        if self._indexed_revision != self._watched.revision:  # the bucket changed: index again
            self._by_tenant = _index(
                ActiveSubscription(held.value, held.created_at)
                for held in self._watched.entries.values()
            )
            self._indexed_revision = self._watched.revision
        return self._by_tenant.get(tenant, ())

    def matching(self, tenant: str, event_type: str) -> list[ActiveSubscription]:
        """The tenant's enabled subscriptions that want ``event_type``."""
        return [s for s in self.for_tenant(tenant) if wants(s.subscription, event_type)]

    async def close(self) -> None:
        await self._watched.stop()


def _index(active: Iterable[ActiveSubscription]) -> dict[str, tuple[ActiveSubscription, ...]]:
    by_tenant: dict[str, list[ActiveSubscription]] = {}
    for item in active:
        by_tenant.setdefault(item.subscription.tenant, []).append(item)
    return {tenant: tuple(items) for tenant, items in by_tenant.items()}
