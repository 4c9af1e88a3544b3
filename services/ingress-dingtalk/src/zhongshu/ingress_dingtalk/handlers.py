"""The robot HTTP callback, ``POST /webhooks/dingtalk/{app}``, handed to the ingress the
lifespan opened (Stream-mode frames reach it through the connections, see ``resources.py``)."""

from __future__ import annotations

from zhongshu.ingress_dingtalk.ingress import robot_callback
from zhongshu.ingress_dingtalk.resources import DingTalkService
from zhongshu.runtime.webhooks import Webhook, WebhookRequest, WebhookResponse

WEBHOOK_PATH = "/webhooks/dingtalk/{app}"


def register(service: DingTalkService) -> None:
    async def callback(request: WebhookRequest) -> WebhookResponse:
        return await robot_callback(service.deps.ingress, request)

    service.webhooks.append(Webhook(WEBHOOK_PATH, callback))
