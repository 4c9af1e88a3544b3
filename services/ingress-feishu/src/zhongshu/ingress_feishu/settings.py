"""ingress-feishu's settings: the runtime's, plus where the platform lives (``PlatformURLs``),
how much clock skew a signed request may have, and what a card click is answered with while the
real result follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from zhongshu.platforms.settings import PlatformURLs
from zhongshu.runtime.settings import ServiceSettings

DEFAULT_CARD_RESPONSE = {"toast": {"type": "info", "content": "收到，处理中…"}}


class FeishuIngressSettings(ServiceSettings, PlatformURLs):
    model_config = SettingsConfigDict(
        env_prefix="ZHONGSHU_", extra="ignore", frozen=True, populate_by_name=True
    )

    config_path: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("ZHONGSHU_CONFIG", "config_path"),
        description="zhongshu.yaml; unset = ./config/zhongshu.yaml",
    )
    # Feishu documents no freshness window for X-Lark-Request-Timestamp and lark-oapi checks
    # none; nor does it say whether a retry is re-signed. The bound must therefore cover the
    # platform's own retry span (15 s, 5 min, 1 h, 6 h: ~7.1 h) so a late retry of an event we
    # never stored (hub down) is not refused, and stay below the dedupe TTL (48 h), so every
    # replay inside the window hits the durable dedupe key. 8 h satisfies both.
    max_timestamp_skew_s: float = Field(
        default=8 * 3600, gt=0, description="accepted |now - X-Lark-Request-Timestamp|"
    )
    # Feishu wants its 200 within 3 s; past that it re-pushes anyway, so waiting longer for a
    # PubAck only holds a connection. A publish that lands after the timeout is dropped as a
    # duplicate (same Nats-Msg-Id) when the re-push comes 15 s later.
    publish_timeout_s: float = Field(
        default=2.5, gt=0, description="longest wait for the PubAck before answering 503"
    )
    card_response: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_CARD_RESPONSE),
        description="JSON answered to a card click once it is stored (toast or card)",
    )
    bot_names: dict[str, str] = Field(
        default_factory=dict,
        description='{"<app>": "<bot name>"}: fallback mention check when bot_open_id is unset',
    )

    @field_validator("card_response", "bot_names", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value
