"""The running configuration, shared through the NATS KV bucket ``config``.

``zhongshu config push`` stores the YAML text of ``zhongshu.yaml`` (with its ``${VAR}`` and
``${file:…}`` references unresolved, so no secret is ever written to the bus); every service
resolves it against its own environment and applies a new revision within about a second,
without a restart. An invalid revision is logged and ignored: the last good one stays."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Protocol

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from zhongshu.contracts.streams import CONFIG_KV
from zhongshu.runtime.buckets import WatchedBucket
from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.hubconfig import HubConfig, config_path, parse_config

log = logging.getLogger("zhongshu.runtime.liveconfig")

CONFIG_KEY = "zhongshu.yaml"
Listener = Callable[[HubConfig], None]


async def push(js: JetStreamContext, text: str, *, source: str = CONFIG_KEY) -> int:
    """Validate ``text`` strictly (every reference resolvable here) and store it; returns the
    new revision. Raises :class:`ConfigurationError` naming the field when it is invalid."""
    parse_config(text, source=source)
    bucket = await js.key_value(CONFIG_KV.bucket)
    return int(await bucket.put(CONFIG_KEY, text.encode()))


def _parse_lenient(text: str, source: str) -> HubConfig:
    missing: list[str] = []
    config = parse_config(text, source=source, missing=missing)
    if missing:
        log.warning(
            "configuration references this service cannot resolve (left empty): %s",
            "; ".join(missing),
        )
    return config


class ConfigSource(Protocol):
    """What a service reads its configuration from: ``LiveConfig`` or, in tests,
    ``StaticConfig``."""

    @property
    def current(self) -> HubConfig: ...

    async def close(self) -> None: ...


class StaticConfig:
    """A fixed configuration (tests, and tools that run once)."""

    def __init__(self, config: HubConfig) -> None:
        self._config = config

    @property
    def current(self) -> HubConfig:
        return self._config

    async def close(self) -> None:
        return None


class LiveConfig:
    """The current :class:`HubConfig`, kept up to date from the ``config`` bucket."""

    def __init__(self, js: JetStreamContext, initial: HubConfig, revision: int) -> None:
        self._current = initial
        self.revision = revision
        self._listeners: list[Listener] = []
        # The text is parsed here, not by the watch: only a revision newer than the one held.
        self._watched: WatchedBucket[str] = WatchedBucket(
            js, CONFIG_KV.bucket, bytes.decode, keys=CONFIG_KEY, on_entry=self._changed
        )

    @classmethod
    async def open(cls, js: JetStreamContext, *, path: Path | None = None) -> LiveConfig:
        """The configuration stored in the bucket, or else the file (``ZHONGSHU_CONFIG``,
        default ``./config/zhongshu.yaml``; no file = no apps yet). Starts watching."""
        bucket = await js.key_value(CONFIG_KV.bucket)
        try:
            entry = await bucket.get(CONFIG_KEY)
        except NotFoundError:  # never set, deleted or purged
            entry = None
        if entry is not None and entry.value:
            initial = _parse_lenient(
                entry.value.decode(), f"config bucket revision {entry.revision}"
            )
            revision = int(entry.revision or 0)
        else:
            file = path or config_path()
            initial = _parse_lenient(file.read_text(), str(file)) if file.exists() else HubConfig()
            revision = 0
        live = cls(js, initial, revision)
        live._watched.start()
        return live

    @classmethod
    async def on(
        cls, stack: AsyncExitStack, js: JetStreamContext, *, path: Path | None = None
    ) -> LiveConfig:
        """:meth:`open`, closed with ``stack`` (a service's lifespan)."""
        live = await cls.open(js, path=path)
        stack.push_async_callback(live.close)
        return live

    @property
    def current(self) -> HubConfig:
        return self._current

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every new valid configuration."""
        self._listeners.append(listener)

    async def close(self) -> None:
        await self._watched.stop()

    async def _changed(self, entry: KeyValue.Entry, text: str | None) -> None:
        if text is None or not entry.revision or entry.revision <= self.revision:
            return  # a delete or purge keeps the last; an older revision is known already
        self._apply(text, int(entry.revision))

    def _apply(self, text: str, revision: int) -> None:
        try:
            config = _parse_lenient(text, f"config bucket revision {revision}")
        except ConfigurationError as exc:
            log.error("ignoring invalid configuration revision %d: %s", revision, exc)
            return
        self._current, self.revision = config, revision
        log.info("configuration revision %d applied", revision)
        for listener in self._listeners:
            try:
                listener(config)
            except Exception:
                log.exception("configuration listener failed")


async def config_source(
    stack: AsyncExitStack,
    js: JetStreamContext,
    given: ConfigSource | HubConfig | None,
    *,
    path: Path | None = None,
) -> ConfigSource:
    """What a service reads its configuration from: the one given (a test's fixed
    configuration), else the live one, closed with ``stack``."""
    if isinstance(given, HubConfig):
        return StaticConfig(given)
    if given is not None:
        return given
    return await LiveConfig.on(stack, js, path=path)
