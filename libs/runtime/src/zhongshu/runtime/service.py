"""A service: settings, one bus connection, its consumers, the health side port, and a
lifecycle that ends cleanly on SIGTERM. ``main.py`` of each service only wires these.

A service's resources are opened by its *lifespan*, an async context manager that yields one
typed dependencies object; consumers get it as their first argument (the shape of FastStream's
lifespan and context, without a string-keyed state)::

    @contextlib.asynccontextmanager
    async def lifespan(svc: Service[RouterSettings, Deps]) -> AsyncIterator[Deps]:
        async with Redis.from_url(svc.settings.redis_url) as redis:
            yield Deps(router=InboundRouter(...), redis=redis)

    service = Service("router", RouterSettings, lifespan, publishes=[channels.CHAT_COMMANDS])

    @service.consumes(stream=..., subjects=..., event=MessageReceived)
    async def on_inbound(deps: Deps, env: Envelope[MessageReceived], delivery: Delivery) -> None:
        await deps.router.handle(env, delivery)

What a service publishes is declared next to what it consumes: the publisher refuses any other
subject (``UndeclaredPublish``), and ``zhongshu.runtime.topology`` reads both to generate the
AsyncAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Generic, Protocol

from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from starlette.routing import BaseRoute
from typing_extensions import TypeVar

from zhongshu.contracts import envelope as wire
from zhongshu.contracts.channels import Channel
from zhongshu.contracts.events import Event
from zhongshu.runtime import bus, gctuning, telemetry
from zhongshu.runtime.consumer import ConsumerLoop, ConsumerSpec, Decoder, Delivery
from zhongshu.runtime.errors import ConfigurationError, RuntimeFailure, ServiceStopped
from zhongshu.runtime.health import HealthServer, ReadinessCheck, build_app
from zhongshu.runtime.heartbeat import Heartbeats
from zhongshu.runtime.periodic import Periodic
from zhongshu.runtime.settings import ServiceSettings, load_settings
from zhongshu.runtime.webhooks import Webhook

log = logging.getLogger("zhongshu.runtime.service")

E = TypeVar("E", bound=Event)
T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings, default=Any)
D = TypeVar("D", default=Any)
Lifespan = Callable[["Service[S, D]"], AbstractAsyncContextManager[D]]
DepsHandler = Callable[[D, Any, Delivery], Awaitable[None]]


class Pingable(Protocol):
    def ping(self) -> Any: ...


# What the runtime itself publishes for every service: dead letters and their alerts.
RUNTIME_PUBLISHES = ("dlq.>", "alert.error.*")
# KV writes (a bucket is a stream whose subjects start with $KV): permissions per bucket belong to
# the bus credentials, not to the channel declaration.
KV_RECORDS = "$KV.>"


class Service(Generic[S, D]):
    """Declare the lifespan, consumers (:meth:`consumes`) and published channels, then
    ``main()`` (a process) or ``start()``/``stop()`` (tests)."""

    def __init__(
        self,
        name: str,
        settings_type: type[S] = ServiceSettings,  # type: ignore[assignment]
        lifespan: Lifespan[S, D] | None = None,
        *,
        publishes: Sequence[Channel] | None = None,
        receives: Sequence[Channel] = (),
        description: str = "",
    ) -> None:
        """``publishes``: every channel this service sends to (None: not declared, nothing
        checked). ``receives``: channels it reads other than through its consumers (the
        archiver's own stream drain). ``description``: one line for the AsyncAPI document."""
        self.name = name
        self.settings_type = settings_type
        self.lifespan = lifespan
        self.publishes = tuple(publishes) if publishes is not None else None
        self.receives = tuple(receives)
        self.description = description
        self._deps_consumers: list[tuple[ConsumerSpec[Any], DepsHandler[D]]] = []
        self._late_options: dict[int, Callable[[S], Mapping[str, Any]]] = {}
        self._deps: D | None = None
        self._started = False
        self._exit_stack: AsyncExitStack | None = None
        self.loops: list[ConsumerLoop[Any]] = []
        self._checks: dict[str, ReadinessCheck] = {}
        self.routes: list[BaseRoute] = []  # HTTP routes served on the side port (an API)
        self.webhooks: list[Webhook] = []  # platform webhooks on the side port, bare ASGI
        self._settings: S | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._publisher: bus.Publisher | None = None
        self._health: HealthServer | None = None
        self._metrics: Periodic | None = None
        self.heartbeats: Heartbeats | None = None

    # ------------------------------------------------------------------ declaration

    def consumes(
        self,
        *,
        stream: str,
        subjects: tuple[str, ...] | str,
        durable: str | None = None,
        event: type[E] | None = None,
        decode: Decoder[Any] | None = None,
        options_from: Callable[[S], Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> Callable[[DepsHandler[D]], DepsHandler[D]]:
        """Register ``handler(deps, data, delivery)`` for a durable pull consumer; ``deps`` is
        what the lifespan yielded. ``event`` decodes the CloudEvents envelope into
        ``Envelope[event]`` in one msgspec pass; ``decode`` takes raw bytes for anything else.
        ``options_from(settings)`` gives options that come from settings (a concurrency, say),
        applied when the service starts."""

        if event is not None and decode is not None:
            raise ValueError("give either event= or decode=, not both")
        decoder: Decoder[Any] = (
            wire.decoder(event).decode if event is not None else decode or wire.decode_any
        )
        filters = (subjects,) if isinstance(subjects, str) else tuple(subjects)

        async def not_started(data: Any, delivery: Delivery) -> None:
            raise ServiceStopped(f"{self.name} is not started")

        def register(handler: DepsHandler[D]) -> DepsHandler[D]:
            spec = ConsumerSpec(
                stream=stream,
                durable=durable or self.name,
                subjects=filters,
                handler=not_started,  # bound to the lifespan's deps when the service starts
                decode=decoder,
                **options,
            )
            self._deps_consumers.append((spec, handler))
            if options_from is not None:
                self._late_options[len(self._deps_consumers) - 1] = options_from
            return handler

        return register

    @property
    def consumer_specs(self) -> list[ConsumerSpec[Any]]:
        """Every declared consumer (what it reads), started or not."""
        return [spec for spec, _ in self._deps_consumers]

    def ready_when(self, name: str, check: Callable[[D], Awaitable[bool]]) -> None:
        """Add a check of the lifespan's resources to ``/readyz``: not ready before the
        lifespan has run, nor while the check fails or raises."""

        async def bound() -> bool:
            if not self._started:
                return False
            try:
                return bool(await check(self.deps))
            except Exception:
                return False

        self._checks[name] = bound

    def readiness_ping(self, name: str, client: Callable[[D], Pingable | None]) -> None:
        """Ready while ``client(deps)`` (a Redis client, or anything with an async ``ping``)
        answers; the same check every service with a cache or a store needs."""

        async def ping(deps: D) -> bool:
            found = client(deps)
            return found is not None and bool(await found.ping())

        self.ready_when(name, ping)

    # ------------------------------------------------------------------ accessors

    @property
    def settings(self) -> S:
        if self._settings is None:
            raise RuntimeFailure(f"{self.name} is not started")
        return self._settings

    @property
    def deps(self) -> D:
        """What the lifespan yielded (None without a lifespan); only while started."""
        if not self._started:
            raise ServiceStopped(f"{self.name} is not started")
        return self._deps  # type: ignore[return-value]

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

    def publish_guard(self) -> bus.SubjectGuard | None:
        """The subjects this service's publisher accepts (None when it declares nothing)."""
        if self.publishes is None:
            return None
        patterns = [channel.pattern for channel in self.publishes]
        return bus.SubjectGuard(self.name, [*patterns, *RUNTIME_PUBLISHES, KV_RECORDS])

    async def start(self, settings: S | None = None) -> None:
        self._settings = settings or load_settings(self.settings_type)
        telemetry.setup_tracing(self.name)
        self._nc = await bus.connect(
            self._settings.nats_url, name=self.name, timeout_s=self._settings.connect_timeout_s
        )
        self._js = bus.jetstream(self._nc)
        self._publisher = bus.Publisher.on(self._nc, self._js, allowed=self.publish_guard())
        telemetry.attach_bus(self._nc)  # sampled spans go to the TRACES stream through it
        self._exit_stack = AsyncExitStack()
        if self.lifespan is not None:
            self._deps = await self._exit_stack.enter_async_context(self.lifespan(self))
        self._started = True
        deps = self.deps
        settings_now = self._settings
        bound = [
            dataclasses.replace(
                spec,
                handler=functools.partial(handler, deps),
                **(self._late_options[i](settings_now) if i in self._late_options else {}),
            )
            for i, (spec, handler) in enumerate(self._deps_consumers)
        ]
        ack_wait = self._settings.ack_wait_s
        self.loops = [
            ConsumerLoop(
                dataclasses.replace(spec, ack_wait_s=ack_wait) if ack_wait else spec,
                service=self.name,
                js=self._js,
                publisher=self._publisher,
            )
            for spec in bound
        ]
        for loop in self.loops:
            try:
                await loop.bind()
            except Exception as exc:
                await self._close_lifespan()
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
        interval = float(os.environ.get("ZHONGSHU_METRICS_INTERVAL_S", "5"))
        self._metrics = Periodic("metrics", interval, self._refresh_metrics, wait_first=True)
        self._metrics.start()
        if self._settings.heartbeat_interval_s:
            self.heartbeats = Heartbeats(
                self._js, self.name, checks, interval_s=self._settings.heartbeat_interval_s
            )
            self.heartbeats.start()
        log.info(
            "%s started: %d consumer(s), health on http://%s:%d",
            self.name,
            len(self.loops),
            self._health.host,
            self._health.port,
        )

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work and ack it, close the lifespan, disconnect."""
        timeout = self._settings.drain_timeout_s if self._settings else 30.0
        if self.heartbeats is not None:
            await self.heartbeats.stop()
        if self._metrics is not None:
            await self._metrics.stop()
        await asyncio.gather(*(loop.stop(timeout) for loop in self.loops))
        await self._close_lifespan()
        if self._nc is not None and not self._nc.is_closed:
            await telemetry.detach_bus(self._nc)
            with contextlib.suppress(Exception):
                await self._nc.drain()
        if self._publisher is not None:
            await self._publisher.close()
        if self._health is not None:
            await self._health.stop()
        log.info("%s stopped", self.name)

    async def serve(self, settings: S | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully and flush telemetry."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start(settings)
        gen0 = getattr(settings, "gc_gen0_threshold", gctuning.DEFAULT_GEN0_THRESHOLD)
        gctuning.settle_after_start(int(gen0))
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

    async def _close_lifespan(self) -> None:
        self._started = False
        if self._exit_stack is not None:
            try:
                await self._exit_stack.aclose()
            except Exception:
                log.exception("lifespan exit failed")
            self._exit_stack = None
        self._deps = None

    async def _bus_ready(self) -> bool:
        return (
            self._nc is not None
            and self._nc.is_connected
            and all(loop.bound for loop in self.loops)
        )

    async def _refresh_metrics(self) -> None:
        for loop in self.loops:
            with contextlib.suppress(Exception):
                await loop.refresh_metrics()
