"""A fake DingTalk open platform: signed robot HTTP callbacks, and a Stream-mode gateway (the
open-connection endpoint and the WebSocket) that pushes frames, records ACKs and redelivers
what is not acknowledged, like the platform (protocols §2.1, §2.3).

Used by the ingress tests and, later, by the sandbox::

    sender = DingTalkCallbackSender("http://127.0.0.1:8000", "acme-dingtalk", secret)
    response = await sender.post(sender.message(text="hello", conversation_type="2"))

    async with FakeStreamGateway(client_id="ding_xxx", client_secret=secret) as gateway:
        # point DINGTALK_API_URL at gateway.base_url, then:
        message_id = await gateway.push_bot_message(bot_message(text="hi"))
        ack = await gateway.wait_for_ack(message_id)

:func:`write_app` registers an app with unique credentials and writes the ``zhongshu.yaml`` that
configures the hub for it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.local_server import LocalServer

BOT_MESSAGE_TOPIC = "/v1.0/im/bot/messages/get"
CARD_CALLBACK_TOPIC = "/v1.0/card/instances/callback"
OPEN_PATH = "/v1.0/gateway/connections/open"
SESSION_WEBHOOK_LIFETIME_MS = 90 * 60 * 1000  # what the platform gives (§2.1)


@dataclass(frozen=True)
class DingTalkApp:
    """One configured DingTalk app of a test (unique names: leases and tenants are shared
    by the session's NATS server)."""

    name: str
    tenant: str
    app_key: str
    app_secret: str
    config: Path


def write_app(directory: Path, receive: tuple[str, ...] = ("http",)) -> DingTalkApp:
    """A zhongshu.yaml under ``directory`` with one DingTalk app receiving through ``receive``."""
    suffix = uuid.uuid4().hex[:8]
    app = DingTalkApp(
        name=f"dt-{suffix}",
        tenant=f"t{suffix}",
        app_key=f"ding{suffix}",
        app_secret=f"secret-{uuid.uuid4().hex}",
        config=directory / f"zhongshu-{suffix}.yaml",
    )
    document = {
        "tenants": {app.tenant: {"name": "Test"}},
        "apps": {
            app.name: {
                "tenant": app.tenant,
                "platform": "dingtalk",
                "dingtalk": {
                    "app_key": app.app_key,
                    "app_secret": app.app_secret,
                    "robot_code": app.app_key,
                    "receive": list(receive),
                },
            }
        },
    }
    app.config.write_text(yaml.safe_dump(document))
    return app


MakeApp = Callable[..., DingTalkApp]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign(timestamp_ms: int | str, app_secret: str) -> str:
    """The ``sign`` header DingTalk sends with a robot callback."""
    message = f"{timestamp_ms}\n{app_secret}".encode()
    digest = hmac.new(app_secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def bot_message(
    *,
    text: str = "hello",
    msgtype: str = "text",
    conversation_type: str = "1",
    conversation_id: str | None = None,
    msg_id: str | None = None,
    sender_staff_id: str | None = "staff-alice",
    sender_id: str = "$:LWCP_v1:$alice==",
    sender_nick: str = "Alice",
    at_users: Iterable[str] = (),
    at_bot: bool = False,
    chatbot_user_id: str = "$:LWCP_v1:$bot==",
    robot_code: str = "ding-robot",
    content: dict[str, Any] | None = None,
    create_at: int | None = None,
) -> dict[str, Any]:
    """A robot message as DingTalk sends it (HTTP callback body = Stream frame data).

    ``at_users`` are staff ids of mentioned users; ``at_bot`` adds the robot itself to
    ``atUsers`` and sets ``isInAtList``. ``content`` is the body of non-text messages
    (``{"downloadCode": ...}``, ``{"richText": [...]}``)."""
    created = now_ms() if create_at is None else create_at
    group = conversation_type == "2"
    payload: dict[str, Any] = {
        "msgtype": msgtype,
        "msgId": msg_id or "msg" + base64.b64encode(uuid.uuid4().bytes).decode(),
        "createAt": created,
        "conversationType": conversation_type,
        "conversationId": conversation_id or ("cid-group==" if group else "cid-p2p=="),
        "senderId": sender_id,
        "senderNick": sender_nick,
        "senderCorpId": "ding-corp",
        "isAdmin": False,
        "chatbotUserId": chatbot_user_id,
        "chatbotCorpId": "ding-corp",
        "robotCode": robot_code,
        "isInAtList": at_bot,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s-"
        + uuid.uuid4().hex,
        "sessionWebhookExpiredTime": created + SESSION_WEBHOOK_LIFETIME_MS,
    }
    if sender_staff_id is not None:
        payload["senderStaffId"] = sender_staff_id
    if group:
        payload["conversationTitle"] = "Ops"
    mentioned = [{"dingtalkId": f"$:LWCP_v1:${staff}==", "staffId": staff} for staff in at_users]
    if at_bot:
        mentioned.append({"dingtalkId": chatbot_user_id})
    if mentioned:
        payload["atUsers"] = mentioned
    if msgtype == "text":
        payload["text"] = {"content": (" " if group else "") + text}
    else:
        payload["content"] = content or {}
    return payload


class DingTalkCallbackSender:
    """Posts robot callbacks to ``{base_url}/webhooks/dingtalk/{app}``, signed like DingTalk."""

    def __init__(
        self,
        base_url: str,
        app: str,
        app_secret: str,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/webhooks/dingtalk/{app}"
        self.app_secret = app_secret
        self._client = client or httpx.AsyncClient(timeout=30.0)
        self._own_client = client is None

    def message(
        self,
        *,
        text: str = "hello",
        conversation_type: str = "1",
        at_users: Sequence[str] = (),
        **fields: Any,
    ) -> dict[str, Any]:
        """A robot message payload (see :func:`bot_message` for the other fields)."""
        return bot_message(
            text=text, conversation_type=conversation_type, at_users=at_users, **fields
        )

    def headers(self, timestamp_ms: int | None = None) -> dict[str, str]:
        stamp = now_ms() if timestamp_ms is None else timestamp_ms
        return {"timestamp": str(stamp), "sign": sign(stamp, self.app_secret)}

    async def post(
        self,
        payload: dict[str, Any] | bytes,
        *,
        timestamp_ms: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One delivery. ``headers`` replaces the signed ones (to send bad or missing ones)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = self.headers(timestamp_ms) if headers is None else dict(headers)
        sent["content-type"] = "application/json"
        return await self._client.post(self.url, content=body, headers=sent)

    async def deliver(
        self, payload: dict[str, Any], *, attempts: int = 3, retry_after_s: float = 0.0
    ) -> list[httpx.Response]:
        """Post until a 2xx answer, re-signing each attempt, like a platform retry."""
        responses = []
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(retry_after_s)
            responses.append(await self.post(payload))
            if responses[-1].is_success:
                break
        return responses

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> DingTalkCallbackSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass
class GatewaySession:
    """One WebSocket connection a client opened with a ticket."""

    ticket: str
    connection_id: str
    websocket: WebSocket
    open: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Pending:
    frame: dict[str, Any]
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class FakeStreamGateway(LocalServer):
    """DingTalk's Stream gateway on 127.0.0.1 (``base_url`` is what ``DINGTALK_API_URL`` should
    be): ``POST /v1.0/gateway/connections/open`` hands out one-use tickets,
    ``/connect?ticket=`` is the WebSocket. Frames not ACKed within
    ``redeliver_after_s`` (about 60 s on the platform) are sent again."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redeliver_after_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.redeliver_after_s = redeliver_after_s
        self.open_requests: list[dict[str, Any]] = []  # bodies, secret removed
        self.tickets: list[str] = []
        self.sessions: list[GatewaySession] = []
        self.acks: dict[str, dict[str, Any]] = {}  # messageId → first ACK frame
        self.deliveries: Counter[str] = Counter()  # messageId → times sent
        self.peak_open_sessions = 0
        self.refuse_open = False  # answer the open-connection call with 503
        self._unused_tickets: set[str] = set()
        self._pending: dict[str, _Pending] = {}
        self._ack_events: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()
        super().__init__(
            Starlette(
                routes=[
                    Route(OPEN_PATH, self._open, methods=["POST"]),
                    WebSocketRoute("/connect", self._connect),
                ]
            ),
            host,
            port,
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def stop(self) -> None:
        for pending in self._pending.values():
            if pending.task is not None:
                pending.task.cancel()
        for session in self.sessions:
            if session.open:
                with contextlib.suppress(Exception):
                    await session.websocket.close(1001)
        await super().stop()

    # --- what tests drive -----------------------------------------------------------------

    @property
    def open_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions if s.open]

    async def wait_for_sessions(self, count: int, *, within_s: float = 30.0) -> GatewaySession:
        """Wait until ``count`` sessions were opened in all, and one is open; return it."""

        def ready() -> bool:
            return len(self.sessions) >= count and bool(self.open_sessions)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), within_s)
        return self.open_sessions[-1]

    async def push(
        self,
        topic: str,
        data: dict[str, Any] | str,
        *,
        type: str = "CALLBACK",
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send a frame to the open session (or the next one to open) and keep redelivering
        it until it is ACKed; returns its messageId."""
        frame = self._frame(type, topic, data, headers, message_id)
        mid = frame["headers"]["messageId"]
        pending = _Pending(frame)
        self._pending[mid] = pending
        self._ack_events.setdefault(mid, asyncio.Event())
        pending.task = asyncio.create_task(self._deliver_until_acked(pending))
        return str(mid)

    async def push_bot_message(self, payload: dict[str, Any]) -> str:
        return await self.push(BOT_MESSAGE_TOPIC, payload)

    async def push_card_callback(self, payload: dict[str, Any]) -> str:
        return await self.push(CARD_CALLBACK_TOPIC, payload)

    async def click(
        self, openapi: FakeDingTalkOpenAPI, space_id: str, label: str, staff_id: str
    ) -> str:
        """``staff_id`` clicks the button ``label`` of the newest card in ``space_id`` (a group
        conversation id, or a staff id for a robot chat): the callback is pushed to the app's
        Stream connection; returns its messageId (``wait_for_ack`` waits for the ACK)."""
        return await self.push_card_callback(openapi.card_click(space_id, label, staff_id))

    async def push_event(
        self, event_type: str, data: dict[str, Any], *, event_id: str | None = None
    ) -> str:
        headers = {
            "eventId": event_id or uuid.uuid4().hex,
            "eventType": event_type,
            "eventBornTime": str(now_ms()),
            "eventCorpId": "ding-corp",
            "eventUnifiedAppId": self.client_id,
        }
        return await self.push(event_type, data, type="EVENT", headers=headers)

    async def wait_for_ack(self, message_id: str, *, within_s: float = 30.0) -> dict[str, Any]:
        """The ACK frame the client sent for ``message_id``, with its ``data`` decoded."""
        event = self._ack_events.setdefault(message_id, asyncio.Event())
        await asyncio.wait_for(event.wait(), within_s)
        ack = dict(self.acks[message_id])
        with contextlib.suppress(TypeError, ValueError):
            ack["data"] = json.loads(ack["data"])
        return ack

    async def ping(self, opaque: str | None = None, *, within_s: float = 10.0) -> dict[str, Any]:
        """A SYSTEM ping; returns the client's answer (its data should echo ours)."""
        data = json.dumps({"opaque": opaque or uuid.uuid4().hex})
        frame = self._frame("SYSTEM", "ping", data, None, None)
        mid = frame["headers"]["messageId"]
        self._ack_events[mid] = asyncio.Event()
        await self._send(frame)
        return await self.wait_for_ack(mid, within_s=within_s)

    async def request_disconnect(self) -> None:
        """A SYSTEM disconnect: the client should close and reconnect with a new ticket."""
        await self._send(self._frame("SYSTEM", "disconnect", "{}", None, None))

    async def drop(self) -> None:
        """Close every open session from the gateway's side, without warning."""
        for session in self.open_sessions:
            session.open = False
            with contextlib.suppress(Exception):
                await session.websocket.close(1011)
        await self._notify()

    # --- the server -----------------------------------------------------------------------

    async def _open(self, request: Request) -> Response:
        body = await request.json()
        secret_ok = hmac.compare_digest(
            str(body.get("clientSecret", "")).encode(), self.client_secret.encode()
        )
        self.open_requests.append({k: v for k, v in body.items() if k != "clientSecret"})
        if self.refuse_open:
            return JSONResponse({"code": "ServiceUnavailable"}, status_code=503)
        if body.get("clientId") != self.client_id or not secret_ok:
            return JSONResponse({"code": "InvalidAuthentication"}, status_code=401)
        ticket = uuid.uuid4().hex
        self.tickets.append(ticket)
        self._unused_tickets.add(ticket)
        return JSONResponse({"endpoint": f"ws://{self.host}:{self.port}/connect", "ticket": ticket})

    async def _connect(self, websocket: WebSocket) -> None:
        ticket = websocket.query_params.get("ticket", "")
        if ticket not in self._unused_tickets:
            await websocket.close(4001)
            return
        self._unused_tickets.discard(ticket)
        await websocket.accept()
        session = GatewaySession(ticket, uuid.uuid4().hex, websocket)
        self.sessions.append(session)
        self.peak_open_sessions = max(self.peak_open_sessions, len(self.open_sessions))
        await self._notify()
        # Frames pushed while nobody was connected go out now.
        for pending in self._pending.values():
            if not pending.acked.is_set() and self.deliveries[self._mid(pending.frame)] == 0:
                await self._send_to(session, pending.frame)
        try:
            while True:
                text = await websocket.receive_text()
                self._on_upstream(session, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            session.open = False
            await self._notify()

    def _on_upstream(self, session: GatewaySession, text: str) -> None:
        with contextlib.suppress(ValueError):
            reply = json.loads(text)
            session.received.append(reply)
            mid = str((reply.get("headers") or {}).get("messageId", ""))
            if mid and mid not in self.acks:
                self.acks[mid] = reply
                if mid in self._pending:
                    self._pending[mid].acked.set()
                self._ack_events.setdefault(mid, asyncio.Event()).set()

    async def _deliver_until_acked(self, pending: _Pending) -> None:
        await self._send(pending.frame)
        while not pending.acked.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.acked.wait(), self.redeliver_after_s)
            if not pending.acked.is_set():
                await self._send(pending.frame)

    async def _send(self, frame: dict[str, Any]) -> None:
        sessions = self.open_sessions
        if sessions:
            await self._send_to(sessions[-1], frame)

    async def _send_to(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        try:
            await session.websocket.send_text(json.dumps(frame))
        except Exception:
            session.open = False
            await self._notify()
            return
        self.deliveries[self._mid(frame)] += 1

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    def _mid(frame: dict[str, Any]) -> str:
        return str(frame["headers"]["messageId"])

    def _frame(
        self,
        type: str,
        topic: str,
        data: dict[str, Any] | str,
        headers: dict[str, Any] | None,
        message_id: str | None,
    ) -> dict[str, Any]:
        session = self.open_sessions[-1] if self.open_sessions else None
        return {
            "specVersion": "1.0",
            "type": type,
            "headers": {
                "appId": self.client_id,
                "connectionId": session.connection_id if session else "",
                "contentType": "application/json",
                "messageId": message_id or uuid.uuid4().hex,
                "time": str(now_ms()),
                "topic": topic,
                **(headers or {}),
            },
            "data": data if isinstance(data, str) else json.dumps(data),
        }
