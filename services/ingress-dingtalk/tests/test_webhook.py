"""``POST /webhooks/dingtalk/{app}`` on real JetStream: verified callbacks are published once and
answered after the PubAck; refused ones publish nothing and are counted and audited."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
import pytest
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded, MessageReceived
from zhongshu.contracts.events.chat import REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.dingtalk import (
    DingTalkApp,
    DingTalkCallbackSender,
    MakeApp,
    bot_message,
    now_ms,
    sign,
)
from zhongshu.devstack.testing import StartService as StartReplica
from zhongshu.devstack.testing import collect, provision_all
from zhongshu.runtime import Service

HOUR_MS = 3_600_000


def base_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.health_port}"


def inbound(app: DingTalkApp) -> str:
    return subjects.chat_inbound("dingtalk", app.tenant)


async def test_a_signed_group_message_is_published_once_and_answered_200(
    provisioned_nats_url: str,
    js: JetStreamContext,
    make_app: MakeApp,
    start_replica: StartReplica,
) -> None:
    app = make_app()
    service = await start_replica(provisioned_nats_url, app)
    async with DingTalkCallbackSender(base_url(service), app.name, app.app_secret) as sender:
        payload = sender.message(
            text="/summarize 3d", conversation_type="2", at_users=["user0788"], at_bot=True
        )
        response = await sender.post(payload)
    assert response.status_code == 200
    assert response.json() == {"msgtype": "empty"}

    [stored] = await collect(js, inbound(app), count=1)
    env = wire.decode(stored.data, MessageReceived)
    assert env.id == f"dingtalk:{app.name}:{payload['msgId']}"
    assert stored.headers is not None
    assert stored.headers[H.MSG_ID] == env.id
    assert env.conversation_id == payload["conversationId"]
    event = env.data
    assert (event.app, event.tenant, event.chat_kind, event.text) == (
        app.name,
        app.tenant,
        "group",
        "/summarize 3d",
    )
    assert event.mentions_bot
    assert [m.id for m in event.mentions if not m.is_bot_self] == ["user0788"]
    assert event.sender.id == "staff-alice"
    assert event.reply_handle.kind == REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK
    assert event.reply_handle.url == payload["sessionWebhook"]


def _signed(app: DingTalkApp, stamp: int | None = None) -> dict[str, str]:
    stamp = now_ms() if stamp is None else stamp
    return {"timestamp": str(stamp), "sign": sign(stamp, app.app_secret)}


BAD_INPUTS: dict[str, tuple[int, Any]] = {
    # case: (status, how to send it)
    "unknown app": (404, "unknown-app"),
    "no headers": (401, {}),
    "no sign": (401, lambda app: {"timestamp": str(now_ms())}),
    "wrong secret": (
        401,
        lambda app: {"timestamp": str(now_ms()), "sign": sign(now_ms(), "not-the-secret")},
    ),
    "timestamp 2 h old": (401, lambda app: _signed(app, now_ms() - 2 * HOUR_MS)),
    "timestamp 2 h ahead": (401, lambda app: _signed(app, now_ms() + 2 * HOUR_MS)),
    "not JSON": (400, b'{"msgtype": "text", '),
    "JSON but not an object": (400, b'["msgId"]'),
    "no msgId": (400, b'{"msgtype": "text", "conversationId": "c", "senderStaffId": "s"}'),
    "over 1 MiB": (413, b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'),
    # Correctly signed, a number where a list belongs: was a 500 (issue 18's fuzzing).
    "atUsers is a number": (400, json.dumps({**bot_message(), "atUsers": 7}).encode()),
    "a rich text part is a string": (
        400,
        json.dumps(bot_message(msgtype="richText", content={"richText": ["hi"]})).encode(),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_input_is_refused_publishes_nothing_and_is_audited(
    case: str,
    provisioned_nats_url: str,
    js: JetStreamContext,
    make_app: MakeApp,
    start_replica: StartReplica,
) -> None:
    app = make_app()
    service = await start_replica(provisioned_nats_url, app)
    status, how = BAD_INPUTS[case]
    target = app.name
    async with DingTalkCallbackSender(base_url(service), app.name, app.app_secret) as sender:
        payload: dict[str, Any] | bytes = sender.message(text="hi")
        headers: dict[str, str] | None = None
        if how == "unknown-app":
            target = "unknown-app"
            sender = DingTalkCallbackSender(base_url(service), target, app.app_secret)
        elif isinstance(how, bytes):
            payload = how
        elif callable(how):
            headers = how(app)
        else:
            headers = how
        response = await sender.post(payload, headers=headers)
        await sender.aclose()
    assert response.status_code == status

    assert await collect(js, inbound(app)) == []
    audit_tenant = "_" if target == "unknown-app" else app.tenant
    audits = [
        wire.decode(m.data, AuditRecorded).data
        for m in await collect(js, subjects.audit(audit_tenant, "security"))
    ]
    mine = [a for a in audits if a.target == target]
    assert len(mine) == 1
    assert (mine[0].action, mine[0].outcome, mine[0].actor) == (
        "dingtalk.webhook.rejected",
        "denied",
        "127.0.0.1",
    )
    assert app.app_secret not in msgspec.json.encode(mine[0]).decode()
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(base_url(service) + "/metrics")).text
    assert 'zhongshu_ingress_rejected_total{platform="dingtalk"' in metrics


async def test_a_redelivered_callback_is_published_once(
    provisioned_nats_url: str,
    js: JetStreamContext,
    make_app: MakeApp,
    start_replica: StartReplica,
) -> None:
    app = make_app()
    service = await start_replica(provisioned_nats_url, app)
    async with DingTalkCallbackSender(base_url(service), app.name, app.app_secret) as sender:
        payload = sender.message(text="once")
        answers = [(await sender.post(payload)).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    stored = await collect(js, inbound(app))
    assert len(stored) == 1


async def test_two_replicas_receiving_the_same_callback_publish_one_event(
    provisioned_nats_url: str,
    js: JetStreamContext,
    make_app: MakeApp,
    start_replica: StartReplica,
) -> None:
    app = make_app()
    replicas = [await start_replica(provisioned_nats_url, app) for _ in range(2)]
    senders = [DingTalkCallbackSender(base_url(r), app.name, app.app_secret) for r in replicas]
    payloads = [senders[0].message(text=f"m{i}") for i in range(20)]
    answers = await asyncio.gather(*(s.post(p) for p in payloads for s in senders))
    for s in senders:
        await s.aclose()
    assert {a.status_code for a in answers} == {200}
    stored = await collect(js, inbound(app), count=len(payloads) + 1, within_s=3)
    assert sorted(wire.decode(m.data, MessageReceived).data.text for m in stored) == sorted(
        p["text"]["content"] for p in payloads
    )


async def test_bus_down_answers_503_and_readyz_reports_not_ready(
    private_nats_server: NatsServer,
    make_app: MakeApp,
    start_replica: StartReplica,
) -> None:
    await provision_all(private_nats_server.url)
    app = make_app()
    service = await start_replica(private_nats_server.url, app)
    async with (
        DingTalkCallbackSender(base_url(service), app.name, app.app_secret) as sender,
        httpx.AsyncClient(timeout=30) as http,
    ):
        assert (await sender.post(sender.message(text="before"))).status_code == 200
        assert (await http.get(base_url(service) + "/readyz")).status_code == 200

        private_nats_server.stop()
        assert (await sender.post(sender.message(text="during"))).status_code == 503
        readyz = await http.get(base_url(service) + "/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["checks"]["bus"] is False
