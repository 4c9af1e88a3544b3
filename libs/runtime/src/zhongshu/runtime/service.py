"""A service: settings, one bus connection, its consumers, the health side port, and a
lifecycle that ends cleanly on SIGTERM. ``main.py`` of each service only wires these."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from starlette.routing import BaseRoute

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import Event
from zhongshu.runtime import bus, telemetry
from zhongshu.runtime.consumer import ConsumerLoop, ConsumerSpec, Decoder, Handler
from zhongshu.runtime.errors import ConfigurationError, RuntimeFailure
from zhongshu.runtime.health import HealthServer, ReadinessCheck, build_app
from zhongshu.runtime.settings import ServiceSettings, load_settings
from zhongshu.runtime.webhooks import Webhook

log = logging.getLogger("zhongshu.runtime.service")

E = TypeVar("E", bound=Event)
T = TypeVar("T")
Hook = Callable[["Service"], Awaitable[None]]


class Service:
    """Declare consumers with :meth:`consumer`, resources with :meth:`on_startup` /
    :meth:`on_shutdown`, then ``main()`` (a process) or ``start()``/``stop()`` (tests)."""

    def __init__(self, name: str, settings_type: type[ServiceSettings] = ServiceSettings) -> None:
        self.name = name
        self.settings_type = settings_type
        self.specs: list[ConsumerSpec[Any]] = []
        self.loops: list[ConsumerLoop[Any]] = []
        self.state: dict[str, Any] = {}  # resources opened in startup hooks
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._checks: dict[str, ReadinessCheck] = {}
        self.routes: list[BaseRoute] = []  # HTTP routes served on the side port (an API)
        self.webhooks: list[Webhook] = []  # platform webhooks on the side port, bare ASGI
        self._settings: ServiceSettings | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._publisher: bus.Publisher | None = None
        self._health: HealthServer | None = None
        self._metrics_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ declaration

    def consumer(
        self,
        *,
        stream: str,
        subjects: tuple[str, ...] | str,
        durable: str | None = None,
        event: type[E] | None = None,
        decode: Decoder[Any] | None = None,
        **options: Any,
    ) -> Callable[[Handler[Any]], Handler[Any]]:
        """Register ``handler(data, delivery)`` for a durable pull consumer. ``event`` decodes
        the CloudEvents envelope into ``Envelope[event]`` in one msgspec pass; ``decode`` takes
        raw bytes for anything else."""
        if event is not None and decode is not None:
            raise ValueError("give either event= or decode=, not both")
        decoder: Decoder[Any] = (
            wire.decoder(event).decode if event is not None else decode or wire.decode_any
        )
        filters = (subjects,) if isinstance(subjects, str) else tuple(subjects)

        def register(handler: Handler[Any]) -> Handler[Any]:
            self.specs.append(
                ConsumerSpec(
                    stream=stream,
                    durable=durable or self.name,
                    subjects=filters,
                    handler=handler,
                    decode=decoder,
                    **options,
                )
            )
            return handler

        return register

    def on_startup(self, hook: Hook) -> Hook:
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self._shutdown.append(hook)
        return hook

    def readiness(self, name: str) -> Callable[[ReadinessCheck], ReadinessCheck]:
        """Add a check to ``/readyz`` (the bus is always checked)."""

        def register(check: ReadinessCheck) -> ReadinessCheck:
            self._checks[name] = check
            return check

        return register

    def readiness_ping(self, name: str, state_key: str | None = None) -> None:
        """Ready while ``state[state_key]`` (a Redis client, or anything with an async
        ``ping``) answers; the same check every service with a cache or a store needs."""
        key = state_key or name

        async def check() -> bool:
            client = self.state.get(key)
            try:
                return client is not None and bool(await client.ping())
            except Exception:
                return False

        self._checks[name] = check

    # ------------------------------------------------------------------ accessors

    @property
    def settings(self) -> ServiceSettings:
        if self._settings is None:
            raise RuntimeFailure(f"{self.name} is not started")
        return self._settings

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeFailure(f"{self.name} is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeFailure(f"{self.name} is not connected")
        return self._js

    @property
    def publisher(self) -> bus.Publisher:
        if self._publisher is None:
            raise RuntimeFailure(f"{self.name} is not connected")
        return self._publisher

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, settings: ServiceSettings | None = None) -> None:
        self._settings = settings or load_settings(self.settings_type)
        telemetry.setup_tracing(self.name)
        self._nc = await bus.connect(
            self._settings.nats_url, name=self.name, timeout_s=self._settings.connect_timeout_s
        )
        self._js = bus.jetstream(self._nc)
        self._publisher = bus.Publisher.on(self._nc, self._js)
        for hook in self._startup:
            await hook(self)
        ack_wait = self._settings.ack_wait_s
        self.loops = [
            ConsumerLoop(
                dataclasses.replace(spec, ack_wait_s=ack_wait) if ack_wait else spec,
                service=self.name,
                js=self._js,
                publisher=self._publisher,
            )
            for spec in self.specs
        ]
        for loop in self.loops:
            try:
                await loop.bind()
            except Exception as exc:
                raise RuntimeFailure(
                    f"{self.name}: cannot bind consumer {loop.spec.durable} on stream "
                    f"{loop.spec.stream} ({exc!r}); run `zhongshu provision` first"
                ) from exc
        checks = {"bus": self._bus_ready, **self._checks}
        self._health = HealthServer(
            build_app(self.name, checks, self.routes, self.webhooks),
            self._settings.health_host,
            self._settings.health_port,
        )
        self._health.start()
        for loop in self.loops:
            loop.start()
        self._metrics_task = asyncio.create_task(self._refresh_metrics())
        log.info(
            "%s started: %d consumer(s), health on http://%s:%d",
            self.name,
            len(self.loops),
            self._health.host,
            self._health.port,
        )

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work and ack it, run shutdown hooks, close."""
        timeout = self._settings.drain_timeout_s if self._settings else 30.0
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        await asyncio.gather(*(loop.stop(timeout) for loop in self.loops))
        for hook in reversed(self._shutdown):
            try:
                await hook(self)
            except Exception:
                log.exception("shutdown hook failed")
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        if self._publisher is not None:
            await self._publisher.close()
        if self._health is not None:
            await self._health.stop()
        log.info("%s stopped", self.name)

    async def serve(self, settings: ServiceSettings | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully and flush telemetry."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start(settings)
        print(f"READY {self.name} health_port={self.health_port}", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("%s received stop signal; draining", self.name)
        await self.stop()
        await asyncio.to_thread(telemetry.shutdown_tracing)

    def main(self) -> None:
        """Process entry point: logging, uvloop, serve; readable errors instead of tracebacks
        for configuration and connectivity problems."""
        try:
            settings = load_settings(self.settings_type)
        except ConfigurationError as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        telemetry.setup_logging(self.name, settings.log_level)
        if settings.uvloop:
            import uvloop

            uvloop.install()
        try:
            asyncio.run(self.serve(settings))
        except RuntimeFailure as exc:
            log.error("%s", exc)
            print(f"{self.name}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None

    async def _bus_ready(self) -> bool:
        return (
            self._nc is not None
            and self._nc.is_connected
            and all(loop.bound for loop in self.loops)
        )

    async def _refresh_metrics(self) -> None:
        interval = float(os.environ.get("ZHONGSHU_METRICS_INTERVAL_S", "5"))
        while True:
            await asyncio.sleep(interval)
            for loop in self.loops:
                with contextlib.suppress(Exception):
                    await loop.refresh_metrics()
