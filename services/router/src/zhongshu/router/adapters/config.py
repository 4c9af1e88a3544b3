"""Where the hub configuration comes from: the live ``config`` KV bucket, so every replica
applies a pushed change (whitelists, group rules, limits) within about a second."""

from __future__ import annotations

from typing import Protocol

from nats.js.client import JetStreamContext

from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.liveconfig import LiveConfig


class ConfigSource(Protocol):
    @property
    def current(self) -> HubConfig: ...

    async def close(self) -> None: ...


class StaticConfig:
    """A fixed configuration (tests)."""

    def __init__(self, config: HubConfig) -> None:
        self._config = config

    @property
    def current(self) -> HubConfig:
        return self._config

    async def close(self) -> None:
        return None


async def open_config(js: JetStreamContext) -> ConfigSource:
    """The ``config`` bucket's revision, else the file at ``ZHONGSHU_CONFIG``; watched."""
    return await LiveConfig.open(js)
