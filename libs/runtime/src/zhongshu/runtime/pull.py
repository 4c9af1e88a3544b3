"""Pull requests to a durable JetStream consumer, read through a callback on one inbox
subscription: what the consume loop fetches with.

Why not ``PullSubscription.fetch``: nats-py awaits every message of a fetch separately (a task
and an ``asyncio.wait_for`` each), makes a uuid and a ``json.dumps`` per request, and sends up to
two requests per fetch (a ``no_wait`` probe, then a lingering one). Here one future per fetch is
woken by the subscription's callback, and a busy fetch is one request. The archiver's puller
measured ~3x nats-py's fetch throughput the same way (services/archiver/.../puller.py).

Every request has its own reply subject under the loop's inbox (``<inbox>.<n>``, one wildcard
subscription): the server sends a request's status messages (404, 408, 409, 100) to its reply
subject, so a status that arrives after its fetch gave up (the client's deadline passed first)
cannot end a later fetch. Messages carry their stream subject, not the reply subject, so they
are never attributed to a request: whatever arrives, whenever, is kept until a fetch takes it
(the next fetch returns it first) or :meth:`Puller.close` hands it back. Nothing delivered to
the inbox while it is subscribed is dropped; what a request still open at close would deliver
after it is redelivered by the server after ``ack_wait`` (close waits such a request out when
it knows of one).

Server semantics relied on (nats-server 2.10+; the tests check them):
- ``{"batch": n, "expires": t}``: delivers up to n messages as they are stored; ends with 408
  at ``t``, or silently once n were delivered;
- ``{"batch": n, "expires": t, "no_wait": true}``: delivers what is stored now, or else waits up
  to ``t`` for the first messages, then ends with 404 right after them (or silently at n); 408
  if nothing came.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError

STATUS = "Status"
HEARTBEAT = "100"
# A pull that ended without an error: no messages (no_wait), request expired, or a 409 the
# server sends when the consumer changes under the request (leadership change, max waiting,
# consumer deleted). nats-py's fetch treats these as a timeout, and so do we.
ENDED = frozenset({"404", "408", "409"})
# The client waits this much past a request's expiry for the server's answer (the 408) before
# giving up on it: only a lost connection or a stalled server takes longer.
ANSWER_GRACE_S = 0.2
# A pull the client gave up on (no answer by its expiry: a lost connection, a stalled server)
# may still deliver for a while: meanwhile a fetch woken by its count of messages may have
# counted such strays, and its own request may still be open on the server.
STRAY_WINDOW_S = 5.0
# Bound on handing back what the inbox still holds at close (a round trip to the server).
CLOSE_TIMEOUT_S = 2.0
_MB = 1024 * 1024


class _Request(msgspec.Struct, omit_defaults=True):
    batch: int
    expires: int = 0
    no_wait: bool = False
    idle_heartbeat: int = 0


_encode = msgspec.json.Encoder().encode


class Puller:
    """Fetches from ``durable`` on ``stream``; one fetch at a time (the consume loop's)."""

    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        durable: str,
        *,
        api_prefix: str = "$JS.API",
        pending_msgs_limit: int = 100_000,
    ) -> None:
        self._nc = nc
        self._next = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._pending_msgs_limit = pending_msgs_limit
        self._sub: Subscription | None = None
        self._held: deque[Msg] = deque()  # delivered, not yet taken by a fetch
        self._requests = 0
        self._reply: str | None = None  # the reply subject of the request being waited on
        self._want = 0
        self._end: Msg | None = None  # the status message that ended that request
        self._waiter: asyncio.Future[None] | None = None
        self._strays_until = 0.0  # loop time until which a given-up pull may still deliver
        self._open_until = 0.0  # loop time until which an unfinished request may deliver

    @property
    def subscribed(self) -> bool:
        return self._sub is not None

    @property
    def held(self) -> int:
        """Messages delivered to the inbox and not yet taken by a fetch."""
        return len(self._held)

    async def subscribe(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*",
            cb=self._on_msg,
            pending_msgs_limit=self._pending_msgs_limit,
            pending_bytes_limit=256 * _MB,
        )

    async def fetch(
        self,
        batch: int,
        expires_s: float,
        *,
        no_wait: bool = False,
        heartbeat: float | None = None,
    ) -> list[Msg]:
        """Up to ``batch`` messages. Messages already held (delivered after an earlier fetch
        ended) come first, without a request. Otherwise one request: lingering for ``batch``
        messages until ``expires_s`` or, with ``no_wait``, returning with the first messages
        there are within ``expires_s``. Raises ``nats.errors.TimeoutError`` when the request
        brought nothing (expired, no messages, a 409, or no answer from the server in time)
        and ``APIError`` on any other status, as nats-py's fetch does."""
        if self._sub is None:
            raise RuntimeError("subscribe() first")
        if self._waiter is not None:
            raise RuntimeError("one fetch at a time")
        if self._held:
            return self._take(batch)
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        request = _Request(
            batch=batch,
            expires=max(1, int(expires_s * 1e9) - 100_000),
            no_wait=no_wait,
            idle_heartbeat=int(heartbeat * 1e9) if heartbeat else 0,
        )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._reply, self._want, self._end, self._waiter = reply, batch, None, waiter
        deadline = loop.time() + expires_s + ANSWER_GRACE_S
        try:
            await self._nc.publish(self._next, _encode(request), reply=reply)
            # A timer, not wait_for: no task per fetch. The server answers by ``expires_s``.
            timer = loop.call_at(deadline, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        finally:
            self._reply, self._waiter = None, None
            self._account(loop.time(), deadline, cancelled=not waiter.done())
        msgs = self._take(batch)
        end = self._end
        if msgs:
            return msgs
        if end is None or _status(end) in ENDED:
            raise nats.errors.TimeoutError
        raise APIError.from_msg(end)

    async def close(self) -> list[Msg]:
        """Stop receiving and return every message delivered and not fetched, for the caller to
        hand back (nak): the subscription is drained (its queue passes through the callback)
        when the connection is up. A request that may still be open (its fetch was cancelled,
        or woken while strays of a given-up pull were about) is waited out first, so what it
        delivers is handed back too rather than left to ``ack_wait``."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                if not self._nc.is_connected:
                    raise nats.errors.ConnectionClosedError
                wait = self._open_until - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await asyncio.wait_for(sub.drain(), CLOSE_TIMEOUT_S)  # type: ignore[no-untyped-call]
            except (TimeoutError, nats.errors.Error):
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        held, self._held = list(self._held), deque()
        return held

    def _account(self, now: float, deadline: float, *, cancelled: bool) -> None:
        """Note whether the request just waited on may still deliver (see ``close``)."""
        if self._end is not None:
            return  # its status came: the server has ended it
        if now >= deadline:
            self._strays_until = now + STRAY_WINDOW_S
        elif cancelled or now < self._strays_until:
            self._open_until = max(self._open_until, deadline)

    def _take(self, batch: int) -> list[Msg]:
        held = self._held
        if len(held) <= batch:
            self._held = deque()
            return list(held)
        return [held.popleft() for _ in range(batch)]

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stream message (status messages have no reply subject)
            self._held.append(msg)
            if self._waiter is not None and len(self._held) >= self._want:
                _wake(self._waiter)
            return
        if msg.subject != self._reply:
            return  # a status of a request whose fetch has ended already
        if _status(msg) == HEARTBEAT:
            return
        self._end = msg
        if self._waiter is not None:
            _wake(self._waiter)


def _status(msg: Msg) -> str | None:
    return msg.headers.get(STATUS) if msg.headers else None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
