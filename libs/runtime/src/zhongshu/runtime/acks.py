"""Awaiting JetStream PubAcks through one inbox subscription per connection.

A JetStream publish is a core publish with a reply subject; the stream answers there with its
PubAck. nats-py's ``js.publish`` goes through its generic request path for every message: a
NUID plus two bytes from the system's random source, a done-callback, ``asyncio.wait_for``, a
``json.loads`` and a ``PubAck`` built by field introspection; ``publish_async`` adds a semaphore
taken through ``wait_for``. That was ~65-90 µs of Python per awaited publish on the reference
box, about a third of a whole webhook's budget (bench/ingress.py). Here a reply subject is a
counter under one subscribed inbox, a future waits in a dict, the PubAck is decoded by msgspec
and the timeout is one timer handle: ~30 µs, with the same errors as nats-py raises (the
callers' ``except`` clauses stay as they are).

The subscription is re-established by nats-py after a reconnect; a PubAck lost with the old
connection ends in the publish's timeout, and the caller's retry is dropped by the stream's
duplicate window (every publish carries a ``Nats-Msg-Id``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, NoStreamResponseError

NO_RESPONDERS = "503"


class _Answer(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    domain: str | None = None
    error: dict[str, Any] | None = None


_DECODE = msgspec.json.Decoder(_Answer).decode


class AckInbox:
    """Publishes to JetStream and resolves each message's PubAck future from one inbox.

    ``max_pending`` bounds the PubAcks awaited at once (memory, and backpressure for pipelined
    batches): a publish beyond it waits until answers come in."""

    def __init__(self, nc: NatsClient, *, max_pending: int = 20_000) -> None:
        self._nc = nc
        self._max_pending = max_pending
        self._prefix = ""
        self._sub: Subscription | None = None
        self._waiting: dict[str, tuple[asyncio.Future[PubAck], asyncio.TimerHandle | None]] = {}
        self._numbers = itertools.count(1)
        self._room = asyncio.Event()
        self._opening: asyncio.Lock | None = None

    @property
    def pending(self) -> int:
        return len(self._waiting)

    async def _open(self) -> None:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._sub is not None:
                return
            prefix = self._nc.new_inbox() + "."
            self._sub = await self._nc.subscribe(
                prefix + "*", cb=self._on_answer, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
            self._prefix = prefix

    async def close(self) -> None:
        """Stop listening; PubAcks still awaited fail as timed out."""
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        waiting, self._waiting = self._waiting, {}
        for future, timer in waiting.values():
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_exception(nats.errors.TimeoutError())

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> asyncio.Future[PubAck]:
        """Send one message now; the returned future holds its PubAck (or the error nats-py's
        ``js.publish`` would raise: ``APIError``, ``NoStreamResponseError``, ``TimeoutError``).
        ``timeout_s`` None waits as long as the connection lives."""
        if self._sub is None:
            await self._open()
        while len(self._waiting) >= self._max_pending:
            self._room.clear()
            await self._room.wait()
        reply = f"{self._prefix}{next(self._numbers)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PubAck] = loop.create_future()
        timer = loop.call_later(timeout_s, self._expire, reply) if timeout_s else None
        self._waiting[reply] = (future, timer)
        try:
            await self._nc.publish(
                subject, payload, reply=reply, headers=dict(headers) if headers else None
            )
        except BaseException:
            self._forget(reply)
            raise
        return future

    def _forget(self, reply: str) -> tuple[asyncio.Future[PubAck], asyncio.TimerHandle | None]:
        entry = self._waiting.pop(reply)
        if entry[1] is not None:
            entry[1].cancel()
        if len(self._waiting) < self._max_pending:
            self._room.set()
        return entry

    def _expire(self, reply: str) -> None:
        if reply in self._waiting:
            future, _ = self._forget(reply)
            if not future.done():
                future.set_exception(nats.errors.TimeoutError())

    async def _on_answer(self, msg: Msg) -> None:
        if msg.subject not in self._waiting:
            return  # answered after its timeout
        future, _ = self._forget(msg.subject)
        if future.done():
            return
        try:
            future.set_result(_pub_ack(msg))
        except Exception as exc:
            future.set_exception(exc)


def _pub_ack(msg: Msg) -> PubAck:
    if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
        raise NoStreamResponseError
    try:
        answer = _DECODE(msg.data)
    except msgspec.DecodeError as exc:
        raise APIError(description=f"unreadable PubAck: {exc}") from None
    if answer.error is not None:
        APIError.from_error(answer.error)  # raises the error's own subclass
        raise APIError(description=str(answer.error))
    return PubAck(
        stream=answer.stream, seq=answer.seq, domain=answer.domain, duplicate=answer.duplicate
    )
