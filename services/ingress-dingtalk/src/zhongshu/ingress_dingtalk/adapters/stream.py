"""DingTalk Stream mode (protocols §2.3): open a connection with the app's credentials
(``DingTalkClient.open_stream``), read JSON frames over the WebSocket, answer SYSTEM
ping/disconnect, hand CALLBACK and EVENT frames to a handler and ACK each one only with what the
handler returned; reconnect with a new ticket and jittered exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from zhongshu.ingress_dingtalk.normalize import BOT_MESSAGE_TOPIC, CARD_CALLBACK_TOPIC
from zhongshu.platforms import Credentials, DingTalkClient
from zhongshu.platforms.dingtalk import StreamTicket

log = logging.getLogger("zhongshu.ingress_dingtalk.stream")

SUBSCRIPTIONS = (
    {"type": "EVENT", "topic": "*"},
    {"type": "CALLBACK", "topic": BOT_MESSAGE_TOPIC},
    {"type": "CALLBACK", "topic": CARD_CALLBACK_TOPIC},
)
USER_AGENT = "zhongshu-ingress-dingtalk/0.1"


@dataclass(frozen=True, slots=True)
class Frame:
    """One downstream frame: ``type`` is SYSTEM, EVENT or CALLBACK; ``data`` a JSON string."""

    type: str
    headers: dict[str, Any] = field(default_factory=dict)
    data: str = ""

    @property
    def topic(self) -> str:
        return str(self.headers.get("topic", ""))

    @property
    def message_id(self) -> str:
        return str(self.headers.get("messageId", ""))


FrameHandler = Callable[[Frame], Awaitable["dict[str, Any] | None"]]
"""Returns the ACK's data (e.g. ``{"response": {}}`` or ``{"status": "LATER"}``), or None to
send no ACK at all, so the platform redelivers the frame."""


def parse_frame(raw: str | bytes) -> Frame:
    """A frame, or ``ValueError`` (the listener drops it and reads on)."""
    try:
        value = json.loads(raw)
    except RecursionError:  # nested past the parser: must not end the connection
        raise ValueError("frame nested too deep") from None
    if not isinstance(value, dict):
        raise ValueError("frame is not a JSON object")
    headers = value.get("headers")
    data = value.get("data")
    return Frame(
        type=str(value.get("type", "")),
        headers=headers if isinstance(headers, dict) else {},
        data=data if isinstance(data, str) else json.dumps(data) if data is not None else "",
    )


def ack_frame(frame: Frame, data: dict[str, Any] | str) -> str:
    """The upstream ACK for ``frame``: same messageId, code 200, ``data`` as a JSON string."""
    return json.dumps(
        {
            "code": 200,
            "headers": {"messageId": frame.message_id, "contentType": "application/json"},
            "message": "OK",
            "data": data if isinstance(data, str) else json.dumps(data),
        }
    )


class GatewayRefused(Exception):
    """The open-connection call failed (bad credentials, platform error); the reason is the
    platform client's (no secret)."""


def _local_ip() -> str:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        return str(s.getsockname()[0])
    return "127.0.0.1"


class StreamClient:
    """One app's Stream-mode connection, kept open until cancelled."""

    def __init__(
        self,
        *,
        api_url: str,
        client_id: str,
        client_secret: str,
        handler: FrameHandler,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        name: str = "",
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.client_id, self._app = client_id, Credentials(client_id, client_secret)
        self.handler = handler
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.name = name or client_id
        self.connected = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()

    async def open_connection(self) -> tuple[str, str]:
        """A fresh (endpoint, ticket) pair: each WebSocket needs a new ticket."""
        async with httpx.AsyncClient(timeout=10.0) as http:
            opened = await DingTalkClient(http, api_url=self.api_url).open_stream(
                self._app, subscriptions=SUBSCRIPTIONS, user_agent=USER_AGENT, local_ip=_local_ip()
            )
        if not isinstance(opened, StreamTicket):
            raise GatewayRefused(opened.reason)
        return opened.endpoint, opened.ticket

    async def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                reconnect_now = await self.connect_once()
                failures = 0
                if reconnect_now:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: stream connection failed: %r", self.name, exc)
                failures += 1
            ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(failures - 1, 0))
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))

    async def connect_once(self) -> bool:
        """One session; True when the gateway asked us to reconnect (SYSTEM disconnect)."""
        endpoint, ticket = await self.open_connection()
        separator = "&" if "?" in endpoint else "?"
        url = f"{endpoint}{separator}ticket={quote(ticket, safe='')}"
        async with websockets.connect(url, open_timeout=10, ping_interval=60) as ws:
            log.info("%s: stream connected", self.name)
            self.connected.set()
            try:
                return await self._listen(ws)
            finally:
                self.connected.clear()
                await self._settle()

    async def _listen(self, ws: ClientConnection) -> bool:
        async for raw in ws:
            try:
                frame = parse_frame(raw)
            except ValueError:
                log.warning("%s: unreadable frame dropped", self.name)
                continue
            if frame.type == "SYSTEM":
                if frame.topic == "ping":
                    await ws.send(ack_frame(frame, frame.data))
                elif frame.topic == "disconnect":
                    log.info("%s: gateway asked to reconnect", self.name)
                    return True
                continue
            task = asyncio.create_task(self._dispatch(ws, frame))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return False

    async def _dispatch(self, ws: ClientConnection, frame: Frame) -> None:
        try:
            reply = await self.handler(frame)
        except Exception:
            log.exception("%s: frame %s not handled; not acknowledged", self.name, frame.message_id)
            return
        if reply is None:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(ack_frame(frame, reply))

    async def _settle(self, within_s: float = 5.0) -> None:
        """Let frames being published finish (and ACK if the socket still allows) before the
        socket goes; what is left unacknowledged is redelivered by the platform."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=within_s)
