"""Every service instance's heartbeat: who it is, whether it is ready, its CPU and memory and its
conditions (:mod:`zhongshu.runtime.conditions`), written to the ``heartbeats`` bucket every few
seconds and deleted on a graceful stop. The watchdog reads them; a key that goes stale is a
process that died or hangs.

One KV write per interval per process, and nothing per message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata

import msgspec
import psutil
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from zhongshu.contracts.heartbeats import Heartbeat, heartbeat_key
from zhongshu.contracts.streams import HEARTBEATS_KV
from zhongshu.runtime import conditions
from zhongshu.runtime.periodic import Periodic

log = logging.getLogger("zhongshu.runtime.heartbeat")

ReadinessCheck = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_S = 2.0
_encoder = msgspec.json.Encoder()


def new_instance_id() -> str:
    """Unique per process start: the host, the pid and a few random characters (a pid is reused
    across container restarts)."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _version(service: str) -> str:
    for name in (f"zhongshu-{service}", "zhongshu-runtime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return "unknown"


async def run_checks(checks: Mapping[str, ReadinessCheck]) -> dict[str, bool]:
    """Each readiness check's answer (a check that raises or hangs is not ready)."""

    async def one(check: ReadinessCheck) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), CHECK_TIMEOUT_S))
        except Exception:
            return False

    answers = await asyncio.gather(*(one(check) for check in checks.values()))
    return dict(zip(checks, answers, strict=True))


class Heartbeats:
    """Writes this instance's heartbeat every ``interval_s`` until stopped."""

    def __init__(
        self,
        js: JetStreamContext,
        service: str,
        checks: Mapping[str, ReadinessCheck],
        *,
        interval_s: float,
        instance: str | None = None,
    ) -> None:
        self.service = service
        self.instance = instance or new_instance_id()
        self.key = heartbeat_key(service, self.instance)
        self.interval_s = interval_s
        self._js = js
        self._checks = checks
        self._kv: KeyValue | None = None
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading only sets the baseline
        self._started_at = datetime.now(UTC)
        self._host = socket.gethostname()
        self._version = _version(service)
        self._failing = False
        self._loop = Periodic(f"heartbeat {self.key}", interval_s, self.beat)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop beating and delete the key: a graceful stop is not an outage."""
        await self._loop.stop()
        if self._kv is not None:
            try:
                await asyncio.wait_for(self._kv.delete(self.key), 2.0)
            except Exception as exc:
                log.warning("could not delete heartbeat %s: %r", self.key, exc)

    async def current(self) -> Heartbeat:
        checks = await run_checks(self._checks)
        with self._process.oneshot():
            cpu = self._process.cpu_percent(None)
            rss = self._process.memory_info().rss
        return Heartbeat(
            service=self.service,
            instance=self.instance,
            pid=os.getpid(),
            host=self._host,
            version=self._version,
            started_at=self._started_at,
            at=datetime.now(UTC),
            interval_s=self.interval_s,
            ready=all(checks.values()),
            checks=checks,
            cpu_percent=round(cpu, 1),
            rss_bytes=int(rss),
            conditions=conditions.snapshot(),
        )

    async def beat(self) -> None:
        """Write one heartbeat; a failure is logged once until a write works again (a hub whose
        ``heartbeats`` bucket is not provisioned yet still runs)."""
        try:
            if self._kv is None:
                self._kv = await self._js.key_value(HEARTBEATS_KV.bucket)
            await self._kv.put(self.key, _encoder.encode(await self.current()))
        except Exception as exc:
            if not self._failing:
                log.warning("heartbeat %s not written: %r", self.key, exc)
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat %s written again", self.key)
        self._failing = False
