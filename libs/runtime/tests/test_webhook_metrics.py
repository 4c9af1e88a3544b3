"""Every answered webhook is counted by path template and status: the ingress API's success
rate (R14) is the share of answers below 500."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from zhongshu.runtime.errors import ServiceStopped
from zhongshu.runtime.webhooks import (
    Webhook,
    WebhookFront,
    WebhookRequest,
    WebhookResponse,
)

PATH = "/webhooks/metrics-test/{app}/events"


async def answer(request: WebhookRequest) -> WebhookResponse:
    app = request.path_params["app"]
    if app == "stopping":
        raise ServiceStopped("draining")
    if app == "broken":
        raise RuntimeError("a bug")
    return WebhookResponse.json({"ok": True}, 401 if app == "unsigned" else 200)


async def fallback(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a webhook path reached the fallback")


async def post(front: WebhookFront, app: str) -> int:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": f"/webhooks/metrics-test/{app}/events"}
    await front(scope, receive, send)
    return int(sent[0]["status"])


def count(status: int) -> float:
    labels = {"route": PATH, "status": str(status)}
    return REGISTRY.get_sample_value("zhongshu_webhook_requests_total", labels) or 0.0


async def test_answers_are_counted_by_route_template_and_status() -> None:
    front = WebhookFront([Webhook(PATH, answer)], fallback)
    before = {status: count(status) for status in (200, 401, 503, 500)}
    assert await post(front, "acme") == 200
    assert await post(front, "other-app") == 200  # one series per template, not per app
    assert await post(front, "unsigned") == 401
    assert await post(front, "stopping") == 503
    with pytest.raises(RuntimeError):
        await post(front, "broken")
    after = {status: count(status) for status in (200, 401, 503, 500)}
    assert {s: after[s] - before[s] for s in after} == {200: 2, 401: 1, 503: 1, 500: 1}
