"""Feishu's long connection (WebSocket) for hubs with no public URL: ask the open platform for
an endpoint (``FeishuClient.ws_endpoint``), hold the socket, answer pings, reassemble split
payloads, hand each event to the ingress and ACK it only once the ingress says it is stored;
reconnect with jitter when dropped.

Our own asyncio implementation of the protocol lark-oapi's ``ws.Client`` speaks
(platform-protocols.md §1.3): that client grabs a module-level loop and blocks it, so it
cannot run inside the service's loop. Feishu delivers each event to one of the app's
connections (cluster mode, up to 50), so every replica may hold one: no lease is needed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from websockets.asyncio.client import ClientConnection, connect

from zhongshu.ingress_feishu.pbbp2 import METHOD_CONTROL, METHOD_DATA, Frame, FrameError
from zhongshu.platforms import Credentials, FeishuClient
from zhongshu.platforms.feishu import Endpoint
from zhongshu.runtime.periodic import Periodic

log = logging.getLogger("zhongshu.ingress_feishu.long_connection")

Handler = Callable[[str, bytes], Awaitable[tuple[int, bytes | None]]]
"""``(frame type: "event" | "card", plaintext envelope) → (code, response data)``; the code
goes back to Feishu in the ACK (200 = stored), an exception ACKs 500 so Feishu re-pushes."""


class EndpointRefused(Exception):
    """No endpoint: the open platform refused one (bad credentials, limit reached) or could not
    be asked; the reason is the platform client's (no secret)."""


@dataclass
class ClientConfig:
    """Timings the platform sends with the endpoint and in pongs (seconds)."""

    ping_interval_s: float = 120
    reconnect_interval_s: float = 120
    reconnect_nonce_s: float = 30

    def update(self, raw: dict[str, Any]) -> None:
        for key, attr in (
            ("PingInterval", "ping_interval_s"),
            ("ReconnectInterval", "reconnect_interval_s"),
            ("ReconnectNonce", "reconnect_nonce_s"),
        ):
            value = raw.get(key)
            if isinstance(value, int | float) and value >= 0:
                setattr(self, attr, float(value))


class LongConnection:
    """One app's connection, kept up by :meth:`run` until cancelled."""

    def __init__(
        self,
        *,
        base_url: str,
        app_id: str,
        app_secret: str,
        handle: Handler,
        http: httpx.AsyncClient,
        max_backoff_s: float = 120.0,
    ) -> None:
        self.app_id = app_id
        self._app = Credentials(app_id, app_secret)
        self._feishu = FeishuClient(http, base_url=base_url)
        self._handle = handle
        self._max_backoff_s = max_backoff_s
        self.config = ClientConfig()
        self.connected = asyncio.Event()
        self.connections = 0  # how many times a socket was opened (reconnects included)
        self._parts: dict[str, tuple[float, list[bytes | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                url = await self._endpoint()
                async with connect(url, max_size=None, ping_interval=None) as ws:
                    self.connections += 1
                    failures = 0
                    self.connected.set()
                    log.info("feishu long connection up for %s", self.app_id)
                    await self._session(ws, _service_id(url))
                log.warning("feishu long connection for %s closed by the server", self.app_id)
            except asyncio.CancelledError:
                # Events not yet ACKed are re-pushed by Feishu and deduplicated then.
                for task in list(self._tasks):
                    task.cancel()
                raise
            except Exception as exc:
                failures += 1
                log.warning("feishu long connection for %s failed: %r", self.app_id, exc)
            finally:
                self.connected.clear()
            await asyncio.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        """The SDK's schedule: a random share of the nonce first, then the platform's
        interval, stretched while failures repeat (capped), so a fleet does not reconnect in
        lockstep."""
        jitter = random.random() * self.config.reconnect_nonce_s
        if failures <= 1:
            return jitter
        backoff = self.config.reconnect_interval_s * float(2 ** min(failures - 2, 6))
        return min(self._max_backoff_s, backoff) + jitter

    async def _endpoint(self) -> str:
        endpoint = await self._feishu.ws_endpoint(self._app)
        if not isinstance(endpoint, Endpoint):
            raise EndpointRefused(endpoint.reason)
        self.config.update(endpoint.client_config)
        return endpoint.url

    async def _session(self, ws: ClientConnection, service_id: int) -> None:
        # The interval is read before each wait: a pong may change it.
        ping = functools.partial(self._ping, ws, service_id)
        async with Periodic("feishu-ping", lambda: self.config.ping_interval_s, ping):
            async for message in ws:
                if isinstance(message, str):
                    continue
                try:
                    frame = Frame.decode(message)
                except FrameError as exc:
                    log.warning("undecodable frame from feishu: %s", exc)
                    continue
                if frame.method == METHOD_CONTROL:
                    self._control(frame)
                elif frame.method == METHOD_DATA:
                    task = asyncio.create_task(self._data(ws, frame))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _ping(ws: ClientConnection, service_id: int) -> None:
        ping = Frame(service=service_id, method=METHOD_CONTROL, headers=[("type", "ping")])
        with contextlib.suppress(Exception):
            await ws.send(ping.encode())

    def _control(self, frame: Frame) -> None:
        if frame.header("type") == "pong" and frame.payload:
            with contextlib.suppress(ValueError):
                raw = json.loads(frame.payload)
                if isinstance(raw, dict):
                    self.config.update(raw)

    async def _data(self, ws: ClientConnection, frame: Frame) -> None:
        kind = frame.header("type") or ""
        payload = self._reassemble(frame)
        if payload is None:
            return  # more parts to come; the last one is ACKed
        started = time.monotonic()
        try:
            code, data = await self._handle(kind, payload)
        except Exception as exc:
            log.warning("feishu %s not stored, Feishu will re-push it: %r", kind, exc)
            code, data = 500, None
        answer: dict[str, Any] = {"code": code}
        if data is not None:
            answer["data"] = base64.b64encode(data).decode()
        frame.with_header("biz_rt", str(int((time.monotonic() - started) * 1000)))
        frame.payload = json.dumps(answer).encode()
        with contextlib.suppress(Exception):  # a dropped socket: Feishu re-pushes
            await ws.send(frame.encode())

    def _reassemble(self, frame: Frame) -> bytes | None:
        total = int(frame.header("sum") or 1)
        if total <= 1:
            return frame.payload or b""
        message_id = frame.header("message_id") or ""
        seq = int(frame.header("seq") or 0)
        now = time.monotonic()
        # Parts of a message never completed within the SDK's 5 s are dropped.
        for key in [k for k, (at, _) in self._parts.items() if now - at > 5]:
            del self._parts[key]
        _, parts = self._parts.setdefault(message_id, (now, [None] * total))
        if 0 <= seq < total:
            parts[seq] = frame.payload or b""
        if any(part is None for part in parts):
            return None
        del self._parts[message_id]
        return b"".join(part or b"" for part in parts)


def _service_id(url: str) -> int:
    values = parse_qs(urlparse(url).query).get("service_id") or ["0"]
    try:
        return int(values[0])
    except ValueError:
        return 0
