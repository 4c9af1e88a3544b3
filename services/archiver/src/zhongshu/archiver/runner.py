"""The archiver's work inside its service: one drain per stream and the lag monitor, started by
the service's lifespan after the bus connects and stopped (each drain writing what it holds)
before it closes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from nats.js.errors import NotFoundError

from zhongshu.archiver.adapters.objectstore import (
    ObjectStore,
    StoreError,
    check_reachable,
    open_store,
)
from zhongshu.archiver.adapters.statekv import StateStore
from zhongshu.archiver.alerts import Alerts
from zhongshu.archiver.drain import DrainOptions, StreamDrain, parse_crash_at
from zhongshu.archiver.lag import LagMonitor
from zhongshu.archiver.settings import ArchiverSettings
from zhongshu.contracts.streams import STREAMS
from zhongshu.runtime import Service
from zhongshu.runtime.errors import ConfigurationError, RuntimeFailure
from zhongshu.runtime.periodic import Periodic

log = logging.getLogger("zhongshu.archiver")


def stream_names(settings: ArchiverSettings) -> list[str]:
    """The streams to archive; a name contracts do not declare stops the start."""
    declared = [s.name for s in STREAMS]
    if not settings.archive_streams:
        return [s.name for s in STREAMS if s.archived]
    unknown = sorted(set(settings.archive_streams) - set(declared))
    if unknown:
        raise ConfigurationError(
            f"ZHONGSHU_ARCHIVE_STREAMS names unknown stream(s) {', '.join(unknown)}; "
            f"known: {', '.join(declared)}"
        )
    return list(dict.fromkeys(settings.archive_streams))


def open_configured_store(settings: ArchiverSettings) -> ObjectStore:
    try:
        return open_store(settings.object_store_url)
    except StoreError as exc:
        raise ConfigurationError(f"ZHONGSHU_OBJECT_STORE_URL: {exc}") from None


@contextlib.asynccontextmanager
async def lifespan(svc: Service[ArchiverSettings, Archiver]) -> AsyncIterator[Archiver]:
    """The running archiver, stopped on the way out (also when its start fails half-way)."""
    archiver = Archiver(svc, svc.settings, open_configured_store(svc.settings))
    try:
        await archiver.start()
        yield archiver
    finally:
        await archiver.stop(svc.settings.drain_timeout_s)


class Archiver:
    def __init__(
        self,
        service: Service[ArchiverSettings, Any],
        settings: ArchiverSettings,
        store: ObjectStore,
    ) -> None:
        self.service, self.settings, self.store = service, settings, store
        self.streams = stream_names(settings)
        self.drains: list[StreamDrain] = []
        self.store_ok = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lag: Periodic | None = None

    async def start(self) -> None:
        s, svc = self.settings, self.service
        try:
            crash_at = parse_crash_at(s.archive_crash_at)
        except ValueError as exc:
            raise ConfigurationError(f"ZHONGSHU_ARCHIVE_CRASH_AT: {exc}") from None
        states = await StateStore.open(svc.js)
        for stream in self.streams:
            try:
                await svc.js.stream_info(stream)
            except NotFoundError:
                raise RuntimeFailure(
                    f"stream {stream} does not exist: run `zhongshu provision`"
                ) from None
        alerts = Alerts(svc.publisher, s.archive_alert_window_s)
        await self.check_store()
        if s.archive_drain:
            for stream in self.streams:
                options = DrainOptions(
                    stream=stream,
                    zone=s.zone,
                    time_zone=s.archive_tz,
                    batch=s.archive_fetch_batch,
                    poll_s=s.archive_fetch_expires_s,
                    max_events=s.archive_chunk_max_events,
                    max_bytes=s.archive_chunk_max_bytes,
                    max_age_s=s.archive_chunk_max_age_s,
                    zstd_level=s.archive_zstd_level,
                    crash_at=crash_at,
                )
                drain = StreamDrain(
                    options, nc=svc.nc, js=svc.js, store=self.store, states=states, alerts=alerts
                )
                self.drains.append(drain)
                self._tasks.append(asyncio.create_task(drain.run(), name=f"archive:{stream}"))
        monitor = LagMonitor(
            svc.js,
            states,
            alerts,
            self.streams,
            warning_ratio=s.archive_lag_warning_ratio,
            error_ratio=s.archive_lag_error_ratio,
        )
        self._lag = Periodic("archive:lag", s.archive_lag_check_interval_s, monitor.check)
        self._lag.start()
        log.info(
            "archiving %s to %s (months in %s)%s",
            ", ".join(self.streams),
            self.store.url,
            s.archive_tz,
            "" if s.archive_drain else " [monitor only: nothing is written]",
        )

    async def check_store(self) -> bool:
        """Readiness: the store answers. An unreachable store does not stop the service: the
        drains wait for it and the lag monitor keeps watching (and alerting)."""
        try:
            await check_reachable(self.store)
            self.store_ok = True
        except StoreError as exc:
            if self.store_ok or self._lag is None:  # a change, or the check at start
                log.error("%s", exc)
            self.store_ok = False
        return self.store_ok

    async def stop(self, timeout_s: float) -> None:
        if self._lag is not None:
            await self._lag.stop()
        for drain in self.drains:
            drain.stop()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            log.warning("%s did not stop within %.0fs; cancelled", task.get_name(), timeout_s)
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
