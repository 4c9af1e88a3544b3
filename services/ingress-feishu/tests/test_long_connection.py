"""The long connection against a fake Feishu gateway speaking pbbp2 frames: events are ACKed
only once stored, split payloads are reassembled, card clicks get the configured answer, and
the client comes back when the gateway drops it."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import MessageReceived
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.feishu import FeishuEventSender
from zhongshu.devstack.fakes.feishu_ws import FeishuLongConnectionServer
from zhongshu.devstack.fakes.feishu_ws import Frame as ReferenceFrame
from zhongshu.devstack.testing import collect, provision_all
from zhongshu.ingress_feishu.main import build_service
from zhongshu.ingress_feishu.pbbp2 import METHOD_DATA, Frame
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.runtime.service import Service

APP_ID, APP_SECRET = "cli_longconn", "long-connection-secret"


def test_our_frames_and_the_reference_protobuf_runtime_agree() -> None:
    ours = Frame(
        seq_id=7,
        log_id=2**40,
        service=33554678,
        method=METHOD_DATA,
        headers=[("type", "event"), ("sum", "1")],
        payload=b'{"a":1}',
        log_id_new="log-1",
    )
    reference = ReferenceFrame()
    reference.ParseFromString(ours.encode())
    assert (reference.SeqID, reference.LogID, reference.service, reference.method) == (
        7,
        2**40,
        33554678,
        1,
    )
    assert [(h.key, h.value) for h in reference.headers] == ours.headers
    assert Frame.decode(reference.SerializeToString()) == ours


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FeishuLongConnectionServer]:
    async with FeishuLongConnectionServer(
        app_id=APP_ID, app_secret=APP_SECRET, ping_interval_s=1
    ) as server:
        yield server


@pytest_asyncio.fixture
async def tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest_asyncio.fixture
async def service(
    provisioned_nats_url: str,
    gateway: FeishuLongConnectionServer,
    tmp_path: Path,
    tenant: str,
) -> AsyncIterator[Service]:
    config = tmp_path / "zhongshu.yaml"
    config.write_text(
        f"""
apps:
  lc:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: {APP_ID}, app_secret: {APP_SECRET}, receive: [long_connection]}}
"""
    )
    running = build_service()
    await running.start(
        FeishuIngressSettings(
            nats_url=provisioned_nats_url,
            health_port=0,
            config_path=config,
            feishu_base_url=gateway.base_url,
        )
    )
    try:
        await gateway.wait_for_connections(1)
        yield running
    finally:
        await running.stop()


def a_message(text: str = "hi") -> dict[str, object]:
    return FeishuEventSender("http://unused", "lc").message(text=text)


async def inbound(js: JetStreamContext, tenant: str) -> list[bytes]:
    found = await collect(js, subjects.chat_inbound("feishu", tenant), within_s=1.0)
    return [m.data for m in found]


async def test_an_event_is_acked_only_after_it_is_stored_and_stored_once(
    service: Service, gateway: FeishuLongConnectionServer, js: JetStreamContext, tenant: str
) -> None:
    payload = a_message("over the long connection")
    first = await gateway.push(payload)
    again = await gateway.push(payload)  # Feishu re-pushes when an ACK is late
    assert first["code"] == again["code"] == 200
    assert first["biz_rt"] is not None
    [raw] = await inbound(js, tenant)
    assert wire.decode(raw, MessageReceived).data.text == "over the long connection"


async def test_a_payload_split_over_several_frames_is_reassembled(
    service: Service, gateway: FeishuLongConnectionServer, js: JetStreamContext, tenant: str
) -> None:
    ack = await gateway.push(a_message("in three parts " * 20), parts=3)
    assert ack["code"] == 200
    [raw] = await inbound(js, tenant)
    assert wire.decode(raw, MessageReceived).data.text.startswith("in three parts")


async def test_a_card_action_is_answered_with_the_configured_response(
    service: Service, gateway: FeishuLongConnectionServer
) -> None:
    card = FeishuEventSender("http://unused", "lc").card_action({"approve": "yes"})
    ack = await gateway.push(card, kind="card")
    assert ack["code"] == 200
    assert json.loads(base64.b64decode(ack["data"])) == {
        "toast": {"type": "info", "content": "收到，处理中…"}
    }


async def test_an_alert_button_click_by_a_non_admin_is_answered_with_an_error_toast(
    service: Service, gateway: FeishuLongConnectionServer
) -> None:
    value = {CARD_VALUE_KEY: "k1", "op": "silence"}  # the lc app names no admins
    card = FeishuEventSender("http://unused", "lc").card_action(value)
    ack = await gateway.push(card, kind="card")
    assert ack["code"] == 200
    toast = json.loads(base64.b64decode(ack["data"]))["toast"]
    assert (toast["type"], toast["content"]) == (
        "error",
        "Only this app's admins can handle alerts",
    )


async def test_the_client_pings_and_reconnects_after_the_gateway_drops_it(
    service: Service, gateway: FeishuLongConnectionServer, js: JetStreamContext, tenant: str
) -> None:
    assert gateway.pings >= 1
    opened = gateway.connections_opened
    await gateway.drop()
    await gateway.wait_for_reconnect(after=opened)
    assert (await gateway.push(a_message("after the reconnect")))["code"] == 200
    assert len(await inbound(js, tenant)) == 1


async def test_the_connection_does_not_block_the_service_loop(service: Service) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{service.health_port}/healthz")
    assert response.status_code == 200


MENTIONS_A_NUMBER = {
    "schema": "2.0",
    "header": {"event_id": "e-1", "event_type": "im.message.receive_v1"},
    "event": {
        "sender": {"sender_id": {"open_id": "ou_1"}},
        "message": {"message_id": "om_1", "chat_id": "oc_1", "mentions": 7},
    },
}


@pytest.mark.parametrize(
    "payload", [{"neither": "schema"}, MENTIONS_A_NUMBER], ids=["no schema", "wrong type"]
)
async def test_a_malformed_frame_payload_is_refused_not_stored(
    service: Service,
    gateway: FeishuLongConnectionServer,
    js: JetStreamContext,
    tenant: str,
    payload: dict[str, Any],
) -> None:
    ack = await gateway.push(payload)
    assert ack["code"] == 400
    assert await inbound(js, tenant) == []


async def test_with_the_bus_down_the_event_is_acked_500_so_feishu_pushes_it_again(
    private_nats_server: NatsServer,
    gateway: FeishuLongConnectionServer,
    tmp_path: Path,
) -> None:
    await provision_all(private_nats_server.url)
    config = tmp_path / "zhongshu.yaml"
    config.write_text(
        f"""
apps:
  lc:
    tenant: acme
    platform: feishu
    feishu: {{app_id: {APP_ID}, app_secret: {APP_SECRET}, receive: [long_connection]}}
"""
    )
    running = build_service()
    await running.start(
        FeishuIngressSettings(
            nats_url=private_nats_server.url,
            health_port=0,
            config_path=config,
            feishu_base_url=gateway.base_url,
        )
    )
    try:
        await gateway.wait_for_connections(1)
        private_nats_server.stop()
        for _ in range(50):  # until the client notices the server is gone
            if not running.nc.is_connected:
                break
            await asyncio.sleep(0.1)
        ack = await gateway.push(a_message("not stored yet"))
        assert ack["code"] == 500
    finally:
        await running.stop()
