"""What the watchdog opens at start and closes after its consumers have drained: the live
configuration, the `alerts` and `heartbeats` buckets (watched, so every check reads them from
memory), and the periodic checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import msgspec

from zhongshu.contracts.heartbeats import Heartbeat
from zhongshu.contracts.streams import ALERTS_KV, HEARTBEATS_KV
from zhongshu.runtime import Service
from zhongshu.runtime.buckets import WatchedBucket
from zhongshu.runtime.liveconfig import ConfigSource, config_source
from zhongshu.runtime.periodic import Periodic
from zhongshu.runtime.service import Lifespan
from zhongshu.watchdog.bus import BusCheck
from zhongshu.watchdog.chain import ChainCheck
from zhongshu.watchdog.checker import Checker
from zhongshu.watchdog.domain import AlertRecord
from zhongshu.watchdog.host import HostCheck
from zhongshu.watchdog.lifecycle import AlertBook, decode_record
from zhongshu.watchdog.security import SecurityWatch
from zhongshu.watchdog.settings import WatchdogSettings


@dataclass(frozen=True)
class WatchdogDeps:
    config: ConfigSource
    book: AlertBook
    checker: Checker
    security: SecurityWatch


WatchdogService = Service[WatchdogSettings, WatchdogDeps]


def lifespan(*, config: ConfigSource | None = None) -> Lifespan[WatchdogSettings, WatchdogDeps]:
    """``config`` fixed by a test, else the live configuration."""

    @contextlib.asynccontextmanager
    async def open_resources(svc: WatchdogService) -> AsyncIterator[WatchdogDeps]:
        settings = svc.settings
        async with AsyncExitStack() as stack:
            source = await config_source(stack, svc.js, config, path=settings.config)
            alerts_kv = await svc.js.key_value(ALERTS_KV.bucket)
            # One token: alert keys. The audit trail's mark (`watchdog.audit`) is not a record.
            alerts: WatchedBucket[AlertRecord] = WatchedBucket(
                svc.js, ALERTS_KV.bucket, decode_record, keys="*"
            )
            heartbeats: WatchedBucket[Heartbeat] = WatchedBucket(
                svc.js, HEARTBEATS_KV.bucket, msgspec.json.Decoder(Heartbeat).decode
            )
            for bucket in (alerts, heartbeats):
                bucket.start()
                stack.push_async_callback(bucket.stop)
            book = AlertBook(alerts_kv, svc.publisher)
            security = SecurityWatch()
            chain = ChainCheck(settings.postgres_url) if settings.postgres_url else None
            if chain is not None:
                stack.push_async_callback(chain.close)
            checker = Checker(
                config=source,
                publisher=svc.publisher,
                book=book,
                alerts=alerts,
                heartbeats=heartbeats,
                host=HostCheck(settings.watchdog_disks),
                bus=BusCheck(svc.js, alerts_kv),
                security=security,
                chain=chain,
            )
            checks = Periodic("watchdog checks", checker.interval, checker.run, wait_first=True)
            checks.start()
            stack.push_async_callback(checks.stop)
            yield WatchdogDeps(config=source, book=book, checker=checker, security=security)

    return open_resources


async def checks_run(deps: WatchdogDeps) -> bool:
    return deps.checker.healthy()
