"""The two webhooks, ``POST /webhooks/feishu/{app}/events`` and ``…/cards``: each hands the
request to the ingress the lifespan opened (the long connections call it directly)."""

from __future__ import annotations

from zhongshu.ingress_feishu.resources import FeishuService
from zhongshu.runtime.webhooks import Webhook, WebhookRequest, WebhookResponse


def register(service: FeishuService) -> None:
    async def events(request: WebhookRequest) -> WebhookResponse:
        return await service.deps.ingress.events(request)

    async def cards(request: WebhookRequest) -> WebhookResponse:
        return await service.deps.ingress.cards(request)

    service.webhooks.append(Webhook("/webhooks/feishu/{app}/events", events))
    service.webhooks.append(Webhook("/webhooks/feishu/{app}/cards", cards))
