"""Webhooks served as bare ASGI on a service's side port (runtime.webhooks), beside health."""

from __future__ import annotations

import httpx

from zhongshu.runtime import Service, ServiceSettings
from zhongshu.runtime.webhooks import Webhook, WebhookFront, WebhookRequest, WebhookResponse

LIMIT = 64


async def echo(request: WebhookRequest) -> WebhookResponse:
    body = await request.read(LIMIT)
    if body is None:
        return WebhookResponse.json({"error": "body too large"}, 413)
    return WebhookResponse.json(
        {
            "app": request.path_params["app"],
            "sign": request.header("x-sign"),
            "missing": request.header("x-missing"),
            "body": body.decode(),
            "client": request.client,
        }
    )


async def serving(url: str) -> Service:
    service = Service("webhooks-test")
    service.webhooks.append(Webhook("/webhooks/test/{app}/events", echo))
    await service.start(ServiceSettings(nats_url=url, health_port=0))
    return service


async def test_a_webhook_gets_its_path_headers_and_body(provisioned_nats_url: str) -> None:
    service = await serving(provisioned_nats_url)
    base = f"http://127.0.0.1:{service.health_port}"
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{base}/webhooks/test/acme/events", content=b"hello", headers={"X-Sign": "s1"}
            )
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "application/json"
            assert answer.json() == {
                "app": "acme",
                "sign": "s1",
                "missing": None,
                "body": "hello",
                "client": "127.0.0.1",
            }

            async def pieces() -> object:  # chunked transfer: the body comes in parts
                for part in (b"a" * 30, b"b" * 30):
                    yield part

            chunked = await client.post(f"{base}/webhooks/test/acme/events", content=pieces())
            assert chunked.json()["body"] == "a" * 30 + "b" * 30

            async def too_much() -> object:
                for _ in range(5):
                    yield b"c" * 30

            refused = await client.post(f"{base}/webhooks/test/acme/events", content=too_much())
            assert refused.status_code == 413
    finally:
        await service.stop()


async def test_other_methods_and_paths_are_not_the_webhooks(provisioned_nats_url: str) -> None:
    service = await serving(provisioned_nats_url)
    base = f"http://127.0.0.1:{service.health_port}"
    try:
        async with httpx.AsyncClient() as client:
            wrong_method = await client.get(f"{base}/webhooks/test/acme/events")
            assert wrong_method.status_code == 405
            assert wrong_method.headers["allow"] == "POST"
            assert (await client.post(f"{base}/webhooks/test/a/b/events")).status_code == 404
            assert (await client.get(f"{base}/healthz")).status_code == 200
    finally:
        await service.stop()


async def test_a_webhook_that_needs_resources_answers_503_while_the_service_is_stopped() -> None:
    service: Service[ServiceSettings, None] = Service("webhooks-stopped")

    async def needs_deps(request: WebhookRequest) -> WebhookResponse:
        return WebhookResponse.json({"deps": service.deps})

    front = WebhookFront([Webhook("/webhooks/test/{app}/events", needs_deps)], fallback=echo_asgi)
    transport = httpx.ASGITransport(app=front)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        answer = await client.post("/webhooks/test/acme/events", content=b"{}")
    assert answer.status_code == 503  # the platform retries later


async def echo_asgi(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    raise AssertionError("not a webhook path")
