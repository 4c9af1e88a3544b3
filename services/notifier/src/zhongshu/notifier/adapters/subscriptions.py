"""The callback subscriptions, held in memory and kept current by watching the ``subscriptions``
KV bucket: the gateway writes them, every notifier replica reads every key live, so matching an
event costs no I/O."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import msgspec
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.contracts.definitions import Subscription, definition_key
from zhongshu.contracts.streams import SUBSCRIPTIONS_KV

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


def _entry_time(created: object) -> datetime:
    # nats-py fills ``created`` with the message's stream timestamp (a datetime) in watches.
    if isinstance(created, datetime):
        return created if created.tzinfo else created.replace(tzinfo=UTC)
    return datetime.now(UTC)


class SubscriptionDirectory:
    """Every subscription by tenant. ``ready`` turns true once the bucket has been read to its
    end; until then a handler must not conclude that an event has no subscribers."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._by_key: dict[str, ActiveSubscription] = {}
        self._by_tenant: dict[str, tuple[ActiveSubscription, ...]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, *, wait_s: float) -> SubscriptionDirectory:
        """Start watching, and wait up to ``wait_s`` for the initial read (a slow read only
        delays callbacks: handlers retry while the directory is not ready)."""
        directory = cls(await js.key_value(SUBSCRIPTIONS_KV.bucket))
        directory._task = asyncio.create_task(directory._watch(), name="subscriptions-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(directory._ready.wait(), wait_s)
        if not directory.ready:
            log.warning("subscriptions not read within %.0fs; callbacks wait for them", wait_s)
        return directory

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def for_tenant(self, tenant: str) -> tuple[ActiveSubscription, ...]:
        return self._by_tenant.get(tenant, ())

    def matching(self, tenant: str, event_type: str) -> list[ActiveSubscription]:
        """The tenant's enabled subscriptions that want ``event_type``."""
        return [s for s in self.for_tenant(tenant) if wants(s.subscription, event_type)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnects, server restarts: read everything again
                log.warning("subscriptions watch interrupted: %r", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        # History too: the first revision after a delete is the creation, which `since` needs.
        watcher = await self._bucket.watchall(include_history=True)
        state: dict[str, ActiveSubscription] = {}
        loaded = False
        try:
            async for entry in watcher:
                if entry is None:  # the end of what was stored when the watch began
                    loaded = True
                    self._publish(state)
                    self._ready.set()
                    continue
                self._apply(state, entry.key, entry.value, entry.operation, entry.created)
                if loaded:
                    self._publish(state)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    @staticmethod
    def _apply(
        state: dict[str, ActiveSubscription],
        key: str,
        value: bytes | None,
        operation: str | None,
        created: object,
    ) -> None:
        if operation is not None or not value:  # deleted or purged
            state.pop(key, None)
            return
        try:
            subscription = _decode(value)
            expected = definition_key(subscription.tenant, subscription.id)
        except (msgspec.DecodeError, ValueError) as exc:
            log.error("ignoring subscription %s: %s", key, exc)
            state.pop(key, None)
            return
        if expected != key:
            # The key decides whose subscription it is: a value naming another tenant must not
            # receive that tenant's events.
            log.error("ignoring subscription %s: its tenant and id say %s", key, expected)
            state.pop(key, None)
            return
        previous = state.get(key)
        since = previous.since if previous is not None else _entry_time(created)
        state[key] = ActiveSubscription(subscription, since)

    def _publish(self, state: dict[str, ActiveSubscription]) -> None:
        self._by_key = dict(state)
        self._by_tenant = _index(self._by_key.values())


def _index(active: Iterable[ActiveSubscription]) -> dict[str, tuple[ActiveSubscription, ...]]:
    by_tenant: dict[str, list[ActiveSubscription]] = {}
    for item in active:
        by_tenant.setdefault(item.subscription.tenant, []).append(item)
    return {tenant: tuple(items) for tenant, items in by_tenant.items()}
