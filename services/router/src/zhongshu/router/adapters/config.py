"""Where the hub configuration comes from: the live ``config`` KV bucket, so every replica
applies a pushed change (whitelists, group rules, limits) within about a second."""

from __future__ import annotations

from nats.js.client import JetStreamContext

from zhongshu.runtime.liveconfig import ConfigSource, LiveConfig, StaticConfig

__all__ = ["ConfigSource", "StaticConfig", "open_config"]


async def open_config(js: JetStreamContext) -> ConfigSource:
    """The ``config`` bucket's revision, else the file at ``ZHONGSHU_CONFIG``; watched."""
    return await LiveConfig.open(js)
