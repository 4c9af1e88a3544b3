"""A subscriber's callback endpoint, as a careful receiver writes one: it checks each POST's
signature and timestamp (``verify_callback``) with the secret of the subscription named in the
headers, answers 401 when they do not match, and records every request it gets.

Failure injection for the sender's retries: ``inject(Injected(status=500))`` answers the next
POSTs with programmed statuses, ``stall_s`` answers late (``after_effect``: after recording the
POST as accepted, i.e. the answer is lost), and ``hold()`` keeps every POST waiting until
``release()``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zhongshu.contracts.definitions import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SUBSCRIPTION_HEADER,
    TIMESTAMP_HEADER,
    verify_callback,
)
from zhongshu.devstack.fakes.base_openapi import FakeServer, Injected

__all__ = ["FakeCallbackReceiver", "Injected", "ReceivedCallback"]


@dataclass(frozen=True)
class ReceivedCallback:
    path: str
    subscription_id: str
    event_id: str
    timestamp: str
    signature: str
    content_type: str
    body: bytes
    verified: bool
    status: int
    """What the receiver answered (or was about to, for a stalled answer)."""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class FakeCallbackReceiver(FakeServer):
    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        super().__init__([Route("/{path:path}", self._receive, methods=["POST"])])
        self.secrets: dict[str, str] = dict(secrets or {})
        """The secret of each subscription id this receiver trusts (``trust`` adds one)."""
        self.received: list[ReceivedCallback] = []
        self.max_skew_s = 300.0
        self._open = asyncio.Event()
        self._open.set()
        self.waiting = 0
        """POSTs held by ``hold()`` right now."""

    def trust(self, subscription_id: str, secret: str) -> None:
        self.secrets[subscription_id] = secret

    def url(self, path: str = "hook") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def hold(self) -> None:
        """Every POST from now on waits (unanswered) until ``release()``."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def at(self, path: str) -> list[ReceivedCallback]:
        return [r for r in self.received if r.path == path.lstrip("/")]

    def accepted(self, path: str | None = None) -> list[ReceivedCallback]:
        seen = self.received if path is None else self.at(path)
        return [r for r in seen if r.accepted]

    def verify(self, received: ReceivedCallback, *, body: bytes | None = None) -> bool:
        """The receiver's check, on a recorded POST (or on ``body`` in its place)."""
        secret = self.secrets.get(received.subscription_id)
        if secret is None or not received.timestamp.isdigit():
            return False
        return verify_callback(
            secret,
            int(received.timestamp),
            received.body if body is None else body,
            received.signature,
            now=time.time(),
            max_skew_s=self.max_skew_s,
        )

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        if not self._open.is_set():
            self.waiting += 1
            self._notify()
            try:
                await self._open.wait()
            finally:
                self.waiting -= 1
        headers = request.headers
        record = ReceivedCallback(
            path=request.path_params["path"],
            subscription_id=headers.get(SUBSCRIPTION_HEADER, ""),
            event_id=headers.get(EVENT_ID_HEADER, ""),
            timestamp=headers.get(TIMESTAMP_HEADER, ""),
            signature=headers.get(SIGNATURE_HEADER, ""),
            content_type=headers.get("content-type", ""),
            body=body,
            verified=False,
            status=0,
        )
        verified = self.verify(record)
        injected = self.next_injected() or Injected()
        status = injected.status if verified else 401
        record = dataclasses.replace(record, verified=verified, status=status)
        if injected.after_effect:
            self.received.append(record)
            self._notify()
        if injected.stall_s:
            await asyncio.sleep(injected.stall_s)
        if not injected.after_effect:
            self.received.append(record)
            self._notify()
        return Response(status_code=status)
