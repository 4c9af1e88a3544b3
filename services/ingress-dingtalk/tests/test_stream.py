"""Stream mode against a fake DingTalk gateway on real JetStream: frames are ACKed only after
the PubAck, pings are echoed, a disconnect or a drop leads to a new ticket, and one replica
holds the connection under a lease that another takes over when the holder dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import nats
import pytest
import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    AuditRecorded,
    CardActionReceived,
    MessageReceived,
    PlatformEventReceived,
)
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.dingtalk import DingTalkApp, FakeStreamGateway, MakeApp, bot_message
from zhongshu.devstack.fakes.dingtalk_openapi import (
    BUTTON_CARD_TEMPLATE,
    AICard,
    FakeDingTalkOpenAPI,
)
from zhongshu.devstack.testing import StartService as StartReplica
from zhongshu.devstack.testing import collect, provision_all
from zhongshu.ingress_dingtalk import resources
from zhongshu.ingress_dingtalk.adapters.stream import Frame, parse_frame
from zhongshu.runtime import Service

FAST = {
    "stream_lease_renew_s": 1.0,
    "stream_lease_retry_s": 0.5,
    "stream_backoff_initial_s": 0.1,
    "stream_backoff_max_s": 1.0,
}


@pytest_asyncio.fixture
async def stream_app(make_app: MakeApp) -> DingTalkApp:
    return make_app(receive=("stream",))


@pytest_asyncio.fixture
async def gateway(stream_app: DingTalkApp) -> AsyncIterator[FakeStreamGateway]:
    async with FakeStreamGateway(
        client_id=stream_app.app_key, client_secret=stream_app.app_secret, redeliver_after_s=2.0
    ) as fake:
        yield fake


async def start(
    start_replica: StartReplica, url: str, app: DingTalkApp, gateway: FakeStreamGateway
) -> Service:
    return await start_replica(url, app, dingtalk_api_url=gateway.base_url, **FAST)


def inbound(app: DingTalkApp) -> str:
    return subjects.chat_inbound("dingtalk", app.tenant)


async def test_a_bot_message_frame_is_acked_only_once_it_is_stored(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    [opened] = gateway.open_requests
    assert opened["clientId"] == stream_app.app_key
    assert {"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"} in opened["subscriptions"]
    assert {"type": "EVENT", "topic": "*"} in opened["subscriptions"]

    payload = bot_message(text="hello over stream", conversation_type="2", at_bot=True)
    message_id = await gateway.push_bot_message(payload)
    ack = await gateway.wait_for_ack(message_id)
    # At the moment of the ACK the event is already in the stream.
    stored = await js.get_last_msg(streams.CHAT_INBOUND.name, inbound(stream_app))
    assert (ack["code"], ack["data"]) == (200, {"response": {}})

    env = wire.decode(stored.data or b"", MessageReceived)
    assert env.id == f"dingtalk:{stream_app.name}:{payload['msgId']}"
    assert (env.data.text, env.data.chat_kind, env.data.mentions_bot) == (
        "hello over stream",
        "group",
        True,
    )


async def test_a_frame_with_a_field_of_the_wrong_type_is_acked_and_not_stored(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    # Redelivering it would not make it readable: ACKed, audited, nothing published.
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    message_id = await gateway.push_bot_message({**bot_message(text="hi"), "atUsers": 7})
    ack = await gateway.wait_for_ack(message_id)
    assert (ack["code"], ack["data"]) == (200, {"response": {}})
    assert await collect(js, inbound(stream_app)) == []
    [audit] = await collect(js, subjects.audit(stream_app.tenant, "security"))
    assert wire.decode(audit.data, AuditRecorded).data.labels == {"reason": "malformed frame"}


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"[1]", b"{"], ids=["too deep", "array", "cut"])
def test_an_unreadable_frame_is_a_value_error_which_the_listener_drops(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (any ValueError: that is what is dropped)
        parse_frame(raw)


async def test_a_redelivered_frame_is_published_once(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    payload = bot_message(text="twice")
    for _ in range(2):  # the platform sends the same message again under a new frame id
        await gateway.wait_for_ack(await gateway.push_bot_message(payload))
    assert len(await collect(js, inbound(stream_app))) == 1


async def test_card_callbacks_and_events_are_published_and_acked(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    card = {
        "userId": "manager4521",
        "spaceId": "cidGroup0Ops==",
        "outTrackId": "reply-42",
        "content": json.dumps({"cardPrivateData": {"actionIds": ["ok"], "params": {"a": 1}}}),
    }
    card_ack = await gateway.wait_for_ack(await gateway.push_card_callback(card))
    event_ack = await gateway.wait_for_ack(
        await gateway.push_event("chat_update_title", {"title": "x"}, event_id="ev-1")
    )
    assert card_ack["data"] == {"response": {}}
    assert event_ack["data"]["status"] == "SUCCESS"

    stored = [wire.decode_any(m.data).data for m in await collect(js, inbound(stream_app), count=2)]
    [action] = [e for e in stored if isinstance(e, CardActionReceived)]
    [event] = [e for e in stored if isinstance(e, PlatformEventReceived)]
    assert (action.action, action.action_name, action.chat_id) == ({"a": 1}, "ok", "cidGroup0Ops==")
    assert (event.event_type, event.platform_event_id, event.payload) == (
        "chat_update_title",
        "ev-1",
        {"title": "x"},
    )


async def test_a_click_on_an_alert_cards_button_reaches_the_router_with_its_value(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    # The card as the notifier sends it (DingTalk's button template, clicks over Stream).
    value = {CARD_VALUE_KEY: "k1", "op": "acknowledge"}
    button = {"text": "Acknowledge", "id": "acknowledge", "request": True, "params": value}
    async with FakeDingTalkOpenAPI() as openapi:
        openapi.ai_cards["zs-card"] = AICard(
            BUTTON_CARD_TEMPLATE,
            "IM_GROUP",
            "cidOps==",
            {"sys_full_json_obj": json.dumps({"msgButtons": [button]})},
            callback_type="STREAM",
        )
        await start(start_replica, provisioned_nats_url, stream_app, gateway)
        await gateway.wait_for_sessions(1)
        ack = await gateway.wait_for_ack(
            await gateway.click(openapi, "cidOps==", "Acknowledge", "staff-42")
        )
    # DingTalk's callback answer carries no toast: a non-admin's click is only audited.
    assert ack["data"] == {"response": {}}
    [raw] = await collect(js, inbound(stream_app), count=1)
    action = wire.decode(raw.data, CardActionReceived).data
    assert (action.action, action.user.staff_id, action.card_id, action.chat_id) == (
        value,
        "staff-42",
        "zs-card",
        "cidOps==",
    )


async def test_a_ping_is_echoed(
    provisioned_nats_url: str,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    answer = await gateway.ping("opaque-123")
    assert (answer["code"], answer["data"]) == (200, {"opaque": "opaque-123"})


async def test_a_disconnect_request_reconnects_with_a_new_ticket(
    provisioned_nats_url: str,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    first = await gateway.wait_for_sessions(1)
    await gateway.request_disconnect()
    second = await gateway.wait_for_sessions(2)
    assert second.ticket != first.ticket
    assert not first.open
    assert len(set(gateway.tickets)) == len(gateway.tickets) >= 2
    await gateway.wait_for_ack(await gateway.push_bot_message(bot_message(text="after")))


async def test_a_dropped_connection_is_reopened_and_unacked_frames_redelivered(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await start(start_replica, provisioned_nats_url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    await gateway.drop()
    # Pushed while nobody is connected: delivered to the next session.
    message_id = await gateway.push_bot_message(bot_message(text="while away"))
    await gateway.wait_for_sessions(2)
    await gateway.wait_for_ack(message_id)
    assert len(await collect(js, inbound(stream_app))) == 1


async def test_no_ack_is_sent_while_the_bus_is_down_and_the_frame_is_redelivered(
    private_nats_server: NatsServer,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    await provision_all(private_nats_server.url)
    service = await start(start_replica, private_nats_server.url, stream_app, gateway)
    await gateway.wait_for_sessions(1)
    frame_handler = service.deps.streams.clients[stream_app.name].handler

    private_nats_server.stop()
    # A frame that reaches the handler while the bus is down gets no ACK (an event: LATER).
    frame = Frame(
        type="CALLBACK",
        headers={"messageId": "m-down", "topic": "/v1.0/im/bot/messages/get"},
        data=json.dumps(bot_message(text="during outage")),
    )
    assert await frame_handler(frame) is None
    event = Frame(
        type="EVENT",
        headers={"messageId": "e-down", "eventId": "ev-down", "eventType": "x"},
        data="{}",
    )
    assert (await frame_handler(event))["status"] == "LATER"

    # Through the gateway: pushed during the outage, it is stored once the bus is back (the
    # platform redelivers what was not ACKed) and only then ACKed.
    message_id = await gateway.push_bot_message(bot_message(text="during outage"))
    private_nats_server.start()
    ack = await gateway.wait_for_ack(message_id, within_s=90)
    assert ack["data"] == {"response": {}}
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(private_nats_server.url)
        stack.push_async_callback(nc.close)
        stored = await collect(nc.jetstream(), inbound(stream_app))
    assert [wire.decode(m.data, MessageReceived).data.text for m in stored] == ["during outage"]


async def replicas_holding(services: list[Service], app: DingTalkApp) -> list[Service]:
    return [s for s in services if s.deps.streams.leases[app.name].held]


async def test_one_replica_holds_the_connection_and_another_takes_over_when_it_dies(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    replicas = [await start(start_replica, provisioned_nats_url, stream_app, gateway)]
    await gateway.wait_for_sessions(1)
    replicas.append(await start(start_replica, provisioned_nats_url, stream_app, gateway))
    await gateway.wait_for_ack(await gateway.push_bot_message(bot_message(text="one")))
    [holder] = await replicas_holding(replicas, stream_app)
    [standby] = [r for r in replicas if r is not holder]
    assert holder is replicas[0]
    assert len(gateway.sessions) == 1

    # The holder dies: its tasks stop without releasing the lease, which must lapse (TTL 15 s).
    await resources.stop_streams(holder.deps.streams, release=False)
    takeover = await gateway.wait_for_sessions(2, within_s=60)
    assert standby.deps.streams.leases[stream_app.name].held
    assert gateway.peak_open_sessions == 1
    await gateway.wait_for_ack(await gateway.push_bot_message(bot_message(text="two")))
    assert takeover.open
    texts = sorted(
        wire.decode(m.data, MessageReceived).data.text
        for m in await collect(js, inbound(stream_app), count=2)
    )
    assert texts == ["one", "two"]


async def test_a_holder_that_loses_its_lease_drops_the_connection(
    provisioned_nats_url: str,
    js: JetStreamContext,
    stream_app: DingTalkApp,
    gateway: FakeStreamGateway,
    start_replica: StartReplica,
) -> None:
    service = await start(start_replica, provisioned_nats_url, stream_app, gateway)
    first = await gateway.wait_for_sessions(1)
    lease = service.deps.streams.leases[stream_app.name]
    # Someone else takes the key (as after a network partition): the next renewal fails.
    kv = await js.key_value("leases")
    await kv.put(lease.key, b"another-replica")
    deadline = asyncio.get_running_loop().time() + 30
    while first.open:
        assert asyncio.get_running_loop().time() < deadline, "connection kept without the lease"
        await asyncio.sleep(0.1)
    with contextlib.suppress(Exception):
        await kv.delete(lease.key)
    await gateway.wait_for_sessions(2, within_s=60)
