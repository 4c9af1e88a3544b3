"""Subscriptions (async notifications): signed callbacks of the tenant's task and run events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from zhongshu.gateway.models.common import ApiModel, DefinitionId, Page, check_http_url

EventTypePattern = Annotated[
    str, Field(pattern=r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$", max_length=128)
]


class SubscriptionBody(ApiModel):
    """POST every event of the tenant whose `type` matches one of `event_types` (`*` at the end
    matches any suffix) to `url`, signed with the subscription's secret."""

    url: str = Field(min_length=8, max_length=2048, examples=["https://example.com/hooks/zhongshu"])
    event_types: list[EventTypePattern] = Field(
        default=["zhongshu.task.*", "zhongshu.workflow.*"], min_length=1, max_length=32
    )
    enabled: bool = True
    description: str = Field(default="", max_length=2000)

    _url = field_validator("url")(check_http_url)


class SubscriptionCreate(SubscriptionBody):
    id: DefinitionId


class Subscription(BaseModel):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    description: str = ""
    version: int


class SigningSecret(BaseModel):
    """How callbacks are signed, and the secret: shown once, never stored (it is derived)."""

    secret: str = Field(description="HMAC-SHA256 key; keep it: it is not shown again")
    signature_header: str = Field(
        description='`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`'
    )
    timestamp_header: str = Field(description="unix seconds of signing; reject old ones")
    event_id_header: str = Field(description="the event's id: your idempotency key")


class SubscriptionCreated(Subscription):
    signing: SigningSecret


class SubscriptionList(BaseModel):
    items: list[Subscription]


class Delivery(BaseModel):
    event_id: str
    event_type: str
    status: str = Field(description="delivered or failed")
    status_code: int | None = None
    reason: str | None = None
    attempts: int
    at: datetime


class DeliveryPage(Page):
    items: list[Delivery]
