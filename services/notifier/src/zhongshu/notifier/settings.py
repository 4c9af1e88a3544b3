"""The notifier's settings: the runtime's, the platform base URLs (``PlatformURLs``: tests and
the sandbox point them at fakes), Redis for tokens and rate limits, the delivery limits, and
the callback key."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from zhongshu.notifier.adapters.dingtalk import BUTTON_CARD_TEMPLATE
from zhongshu.platforms.settings import PlatformURLs
from zhongshu.runtime.settings import ServiceSettings


class NotifierSettings(ServiceSettings, PlatformURLs):
    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="ignore", frozen=True)

    redis_url: str = Field(
        description="Redis for access tokens, rate-limit buckets and alert windows "
        "(ZHONGSHU_REDIS_URL)"
    )
    config: Path | None = Field(
        default=None,
        description="zhongshu.yaml when the config bucket is empty (ZHONGSHU_CONFIG)",
    )
    http_timeout_s: float = Field(default=10.0, gt=0)
    # Replies wait on the platform's answer (and a streamed answer's final on its card): 8 in
    # flight kept ~60 /help replies queued at 29 % of a core; 64 doubled free text's answers/s.
    reply_concurrency: int = Field(
        default=64, ge=1, description="replies handled at once per notifier process"
    )
    # DingTalk blocks a robot for 10 min past 20/min: keep a margin below the platform's number.
    dingtalk_robot_per_window: int = Field(default=18, gt=0)
    dingtalk_robot_window_s: float = Field(default=60.0, gt=0)
    # Feishu: 5 QPS per group shared by every bot in it; stay just under.
    feishu_chat_per_window: int = Field(default=4, gt=0)
    feishu_chat_window_s: float = Field(default=1.0, gt=0)
    # Feishu: 50/s and 1000/min per API per app (send, reply, card update and each CardKit
    # call count apart). Our windows already cover the platform's (ratelimit.py), so the
    # platform's own numbers; 0 paces nothing (a fake platform with its limits lifted).
    feishu_app_api_per_s: int = Field(
        default=50, ge=0, description="calls per second per API per Feishu app"
    )
    feishu_app_api_per_min: int = Field(
        default=1000, ge=0, description="calls per minute per API per Feishu app"
    )
    # CardKit: 10 operations/s per card. Best-effort stream updates take a slot only while a
    # share of an app's per-API quota (and of the card's) is free: the rest is kept for the
    # final text, which waits for its slot and must not queue behind updates it overwrites.
    cardkit_card_per_s: int = Field(default=10, gt=1)
    stream_update_share: float = Field(default=0.8, gt=0, le=1)
    alert_window_s: float = Field(
        default=60.0, gt=0, description="repeats of one alert within this are sent once, counted"
    )
    dingtalk_alert_card_template: str = Field(
        default=BUTTON_CARD_TEMPLATE,
        description="the DingTalk card template of alert cards with buttons (a markdown text "
        "and msgButtons; default: DingTalk's public one) (ZHONGSHU_DINGTALK_ALERT_CARD_TEMPLATE)",
    )
    alert_time_zone: str = Field(
        default="UTC",
        description="the time zone of the times an alert card shows (an IANA name, e.g. "
        "Asia/Shanghai) (ZHONGSHU_ALERT_TIME_ZONE)",
    )
    stream_min_interval_s: float = Field(
        default=0.2, gt=0, description="at most one streaming-card update per this per card"
    )
    dingtalk_card_content_key: str = Field(
        default="content",
        description="the markdown variable of the apps' AI card templates that replies stream "
        "into (ZHONGSHU_DINGTALK_CARD_CONTENT_KEY)",
    )
    session_webhook_margin_s: float = Field(
        default=30.0, ge=0, description="treat a sessionWebhook as expired this much early"
    )
    callback_key: SecretStr | None = Field(
        default=None,
        description="derives every subscription's signing secret (ZHONGSHU_CALLBACK_KEY, the "
        "gateway's too); unset = callbacks disabled, nothing is posted",
    )
    callback_timeout_s: float = Field(
        default=10.0, gt=0, description="a callback POST's whole exchange, answer included"
    )
    callback_connect_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("alert_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        """Refused at start rather than when the first alert card is redrawn."""
        if value.upper() != "UTC":
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value
