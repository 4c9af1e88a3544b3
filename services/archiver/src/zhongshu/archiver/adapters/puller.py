"""Batch pulls from one durable pull consumer (``archiver-<STREAM>``), thousands of messages per
request, received by a callback on one inbox subscription.

Why not ``PullSubscription.fetch``: nats-py's fetch awaits every message of a batch separately
(a timer and a task each), which capped a drain at ~10k msgs/s on the reference box; the same
pull requests read through a callback subscription reach ~34k msgs/s (bench/archiver.py).

The consumer is an ack-all cursor re-created at the archive's resume point on every start: the
KV state, not the consumer's ack floor, says where the archive ends, and a fresh consumer does
not wait ``ack_wait`` before redelivering what a killed archiver had fetched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

log = logging.getLogger("zhongshu.archiver.puller")

HEARTBEAT = "100"
CONFLICT = "409"
REPLY_TIMEOUT_S = 5.0
_MB = 1024 * 1024


def consumer_name(stream: str) -> str:
    return f"archiver-{stream}"


class PullFailed(Exception):
    """The server ended a pull with an error (consumer deleted, limits changed)."""


class BatchPuller:
    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        stream: str,
        *,
        ack_wait_s: float,
        max_ack_pending: int,
    ) -> None:
        self.nc, self.js, self.stream = nc, js, stream
        self.durable = consumer_name(stream)
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self._inbox = ""
        self._sub: Subscription | None = None
        self._got: list[Msg] = []
        self._want = 0
        self._done = asyncio.Event()
        self._error: str | None = None

    async def bind(self, start_seq: int) -> None:
        """(Re)create the consumer so that its first delivery is ``start_seq``."""
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.durable)
        config = ConsumerConfig(
            durable_name=self.durable,
            description="archiver cursor; the resume point is the `archive` KV bucket",
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL if start_seq <= 1 else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if start_seq <= 1 else start_seq,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            max_waiting=16,
        )
        await self.js.add_consumer(self.stream, config)
        if self._sub is None:
            self._inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(
                self._inbox,
                cb=self._on_msg,
                pending_msgs_limit=max(200_000, 4 * self.max_ack_pending),
                pending_bytes_limit=1024 * _MB,
            )
        self._got = []

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:
            self._got.append(msg)
            if len(self._got) >= self._want:
                self._done.set()
            return
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status == HEARTBEAT:
            return
        if status == CONFLICT:
            self._error = (msg.headers or {}).get(Header.DESCRIPTION, "conflict")
        self._done.set()  # 404 no messages, 408 request expired, 409: this pull is over

    async def pull(self, batch: int) -> list[Msg]:
        """Up to ``batch`` messages, in stream order: those the stream holds now, at once.

        Not a lingering pull: that delivers messages one by one as they are stored, each its
        own socket read and wake-up of the loop, which at a few hundred events per second cost
        the archiver more than the rest of its work. The drain pauses between pulls instead
        while it is caught up, and what arrived meanwhile comes in one burst."""
        if self._sub is None:
            raise RuntimeError("bind() first")
        self._want = batch
        self._done.clear()
        self._error = None
        if len(self._got) < batch:
            request = {"batch": batch - len(self._got), "no_wait": True}
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}",
                json.dumps(request).encode(),
                reply=self._inbox,
            )
            with contextlib.suppress(TimeoutError):
                # The server ends the pull at once (404 once nothing is left); more means the
                # connection is gone (nats-py reconnects), and the next pull asks again.
                await asyncio.wait_for(self._done.wait(), REPLY_TIMEOUT_S)
        got, self._got = self._got, []
        if self._error and not got:
            raise PullFailed(f"pull from {self.durable} on {self.stream} failed: {self._error}")
        return got

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
