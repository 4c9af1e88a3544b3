"""A fake Feishu long-connection gateway: ``POST /callback/ws/endpoint`` hands out a WebSocket
URL, the socket speaks protobuf ``pbbp2.Frame``s, answers pings with pongs, pushes events and
card actions (split into several frames if asked) and waits for the client's ACK.

    async with FeishuLongConnectionServer(app_id="cli_x", app_secret="s") as gateway:
        # point the client's FEISHU_BASE_URL at gateway.base_url
        await gateway.wait_for_connections(1)
        ack = await gateway.push(payload)            # {"code": 200, ...}
        await gateway.drop()                         # the client must reconnect

Frames are built with protobuf's own runtime from the published schema, independently of the
service's hand-written codec."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import uuid
from typing import Any

import uvicorn
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def _frame_class() -> Any:
    proto = descriptor_pb2.FieldDescriptorProto
    schema = descriptor_pb2.FileDescriptorProto(
        name="fake_pbbp2.proto", package="pbbp2", syntax="proto2"
    )
    header = schema.message_type.add(name="Header")
    for number, name in ((1, "key"), (2, "value")):
        header.field.add(
            name=name, number=number, type=proto.TYPE_STRING, label=proto.LABEL_REQUIRED
        )
    frame = schema.message_type.add(name="Frame")
    for number, name, kind, label in (
        (1, "SeqID", proto.TYPE_UINT64, proto.LABEL_REQUIRED),
        (2, "LogID", proto.TYPE_UINT64, proto.LABEL_REQUIRED),
        (3, "service", proto.TYPE_INT32, proto.LABEL_REQUIRED),
        (4, "method", proto.TYPE_INT32, proto.LABEL_REQUIRED),
        (6, "payload_encoding", proto.TYPE_STRING, proto.LABEL_OPTIONAL),
        (7, "payload_type", proto.TYPE_STRING, proto.LABEL_OPTIONAL),
        (8, "payload", proto.TYPE_BYTES, proto.LABEL_OPTIONAL),
        (9, "LogIDNew", proto.TYPE_STRING, proto.LABEL_OPTIONAL),
    ):
        frame.field.add(name=name, number=number, type=kind, label=label)
    frame.field.add(
        name="headers",
        number=5,
        type=proto.TYPE_MESSAGE,
        label=proto.LABEL_REPEATED,
        type_name=".pbbp2.Header",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pbbp2.Frame"))


Frame = _frame_class()
CONTROL, DATA = 0, 1
SERVICE_ID = 33554678


def _headers(frame: Any) -> dict[str, str]:
    return {h.key: h.value for h in frame.headers}


class FeishuLongConnectionServer:
    """The open platform's side of the long connection, for one app."""

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        ping_interval_s: int = 120,
        reconnect_interval_s: int = 1,
        reconnect_nonce_s: int = 0,
    ) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.client_config = {
            "ReconnectCount": -1,
            "ReconnectInterval": reconnect_interval_s,
            "ReconnectNonce": reconnect_nonce_s,
            "PingInterval": ping_interval_s,
        }
        self.connections_opened = 0
        self.endpoint_requests = 0
        self.pings = 0
        self._sockets: set[WebSocket] = set()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._seq = itertools.count(1)
        app = Starlette(
            routes=[
                Route("/callback/ws/endpoint", self._endpoint, methods=["POST"]),
                WebSocketRoute("/ws", self._socket),
            ]
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connected(self) -> int:
        return len(self._sockets)

    async def __aenter__(self) -> FeishuLongConnectionServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.drop()
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        self._sock.close()

    async def wait_for_connections(self, count: int = 1, timeout_s: float = 10.0) -> None:
        """Until ``count`` clients are connected, counting every socket ever opened."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.connected >= count), timeout_s
            )

    async def wait_for_reconnect(self, after: int, timeout_s: float = 10.0) -> None:
        """Until more than ``after`` sockets have been opened and one is connected."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(
                    lambda: self.connections_opened > after and self.connected > 0
                ),
                timeout_s,
            )

    async def drop(self) -> None:
        """Close every client socket, as the platform does on deploys."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        self._sockets.clear()

    async def push(
        self,
        payload: dict[str, Any],
        *,
        kind: str = "event",
        parts: int = 1,
        timeout_s: float = 3.0,
    ) -> dict[str, Any]:
        """Send an event (``kind="event"``) or card action (``"card"``) to one connected
        client (cluster mode) split into ``parts`` frames; return its ACK's JSON (with
        ``biz_rt``), or raise ``TimeoutError`` after Feishu's 3 s."""
        if not self._sockets:
            raise ConnectionError("no client connected")
        ws = next(iter(self._sockets))
        message_id = uuid.uuid4().hex
        body = json.dumps(payload, ensure_ascii=False).encode()
        size = -(-len(body) // parts)
        chunks = [body[i * size : (i + 1) * size] for i in range(parts)]
        ack: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[message_id] = ack
        seq_id = next(self._seq)
        for seq, chunk in enumerate(chunks):
            frame = Frame(SeqID=seq_id, LogID=seq_id, service=SERVICE_ID, method=DATA)
            for key, value in (
                ("type", kind),
                ("message_id", message_id),
                ("sum", str(parts)),
                ("seq", str(seq)),
                ("trace_id", uuid.uuid4().hex),
            ):
                header = frame.headers.add()
                header.key, header.value = key, value
            frame.payload = chunk
            await ws.send_bytes(frame.SerializeToString())
        try:
            return await asyncio.wait_for(ack, timeout_s)
        finally:
            self._acks.pop(message_id, None)

    # ------------------------------------------------------------------ the platform's side

    async def _endpoint(self, request: Request) -> Response:
        self.endpoint_requests += 1
        body = await request.json()
        if body.get("AppID") != self.app_id or body.get("AppSecret") != self.app_secret:
            return JSONResponse({"code": 1000040344, "msg": "invalid app_id or app_secret"})
        url = f"ws://127.0.0.1:{self.port}/ws?device_id={uuid.uuid4().hex}&service_id={SERVICE_ID}"
        return JSONResponse(
            {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self.client_config}}
        )

    async def _socket(self, ws: WebSocket) -> None:
        await ws.accept()
        async with self._changed:
            self._sockets.add(ws)
            self.connections_opened += 1
            self._changed.notify_all()
        try:
            while True:
                data = await ws.receive_bytes()
                frame = Frame()
                frame.ParseFromString(data)
                headers = _headers(frame)
                if frame.method == CONTROL and headers.get("type") == "ping":
                    self.pings += 1
                    pong = Frame(SeqID=0, LogID=0, service=frame.service, method=CONTROL)
                    header = pong.headers.add()
                    header.key, header.value = "type", "pong"
                    pong.payload = json.dumps(self.client_config).encode()
                    await ws.send_bytes(pong.SerializeToString())
                elif frame.method == DATA:
                    ack = self._acks.get(headers.get("message_id", ""))
                    if ack is not None and not ack.done():
                        answer = json.loads(frame.payload)
                        answer["biz_rt"] = headers.get("biz_rt")
                        ack.set_result(answer)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            async with self._changed:
                self._sockets.discard(ws)
                self._changed.notify_all()
