"""Connecting to NATS, and publishing to JetStream with ids and trace context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

from nats.aio.client import Client as NatsClient
from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from zhongshu.contracts import headers as H
from zhongshu.contracts.subjects import subject_matches
from zhongshu.runtime import telemetry
from zhongshu.runtime.acks import AckInbox
from zhongshu.runtime.errors import BusUnavailable, UndeclaredPublish

log = logging.getLogger("zhongshu.runtime.bus")

# Enough to pipeline large batches (the raw baseline uses 20k) without unbounded memory.
PUBLISH_ASYNC_MAX_PENDING = 20_000


async def connect(url: str, *, name: str, timeout_s: float = 10.0) -> NatsClient:
    """Connect with unlimited reconnects once connected; fail with a readable
    :class:`BusUnavailable` when the first connection cannot be made within ``timeout_s``."""

    async def on_disconnect() -> None:
        if not (client.is_closed or client.is_draining):
            log.warning("disconnected from NATS; reconnecting")

    async def on_reconnect() -> None:
        log.info("reconnected to NATS")

    async def on_error(exc: Exception) -> None:
        log.warning("NATS connection error: %s", exc)

    client = NatsClient()
    try:
        # nats-py retries the first connection forever when reconnects are unlimited, so the
        # deadline is ours; after it, the client reconnects on its own for as long as it runs.
        await asyncio.wait_for(
            client.connect(
                url,
                name=name,
                connect_timeout=max(1, min(2, int(timeout_s))),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                pending_size=64 * 1024 * 1024,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
            ),
            timeout_s,
        )
        return client
    except Exception as exc:
        last_error: Exception = exc
    with contextlib.suppress(Exception):
        await client.close()
    raise BusUnavailable(
        f"cannot reach NATS at {redact_url(url)} within {timeout_s:g}s "
        f"({type(last_error).__name__}); "
        "start it with `zhongshu up` or point ZHONGSHU_NATS_URL at a running server"
    )


def redact_url(url: str) -> str:
    """Drop user:password from a URL before it is logged or shown."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def jetstream(nc: NatsClient) -> JetStreamContext:
    return nc.jetstream(publish_async_max_pending=PUBLISH_ASYNC_MAX_PENDING)


def outgoing_headers(msg_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for one publish: the deterministic ``Nats-Msg-Id``, the CloudEvents content type
    and the current trace context."""
    hdrs = {H.MSG_ID: msg_id, H.CONTENT_TYPE: H.CLOUDEVENTS_JSON}
    if extra:
        hdrs.update(extra)
    telemetry.inject(hdrs)
    return hdrs


class SubjectGuard:
    """The subjects one publisher may use: a set of filters (a service's declared channels).
    A subject is matched once and remembered, so the check costs a set lookup per publish."""

    MAX_REMEMBERED = 10_000

    def __init__(self, owner: str, patterns: Iterable[str]) -> None:
        self.owner = owner
        self.patterns = tuple(dict.fromkeys(patterns))
        self._seen: set[str] = set()

    def check(self, subject: str) -> None:
        if subject in self._seen:
            return
        if not any(subject_matches(p, subject) for p in self.patterns):
            raise UndeclaredPublish(
                f"{self.owner} published to {subject!r}, which none of its declared channels "
                f"carries ({', '.join(self.patterns)}); declare it in Service(publishes=...)"
            )
        if len(self._seen) >= self.MAX_REMEMBERED:
            self._seen.clear()
        self._seen.add(subject)


class Publisher:
    """Publishes to JetStream. Every publish names its ``Nats-Msg-Id``, so a retried publish is
    dropped by the stream's duplicate window instead of stored twice.

    With ``acks`` (what a service runs with) PubAcks come through its one inbox, which costs a
    third of nats-py's request path per message; without, through ``js.publish``."""

    def __init__(
        self,
        js: JetStreamContext,
        acks: AckInbox | None = None,
        *,
        allowed: SubjectGuard | None = None,
    ) -> None:
        self._js = js
        self._acks = acks
        self._allowed = allowed

    @classmethod
    def on(
        cls, nc: NatsClient, js: JetStreamContext, *, allowed: SubjectGuard | None = None
    ) -> Publisher:
        return cls(js, AckInbox(nc, max_pending=PUBLISH_ASYNC_MAX_PENDING), allowed=allowed)

    async def close(self) -> None:
        if self._acks is not None:
            await self._acks.close()

    async def publish_record(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: Mapping[str, str],
        timeout_s: float = 30.0,
    ) -> asyncio.Future[PubAck]:
        """Send a record that is not an event (a KV entry): no message id, no CloudEvents
        headers; return its PubAck future."""
        if self._allowed is not None:
            self._allowed.check(subject)
        if self._acks is None:
            return await self._js.publish_async(subject, payload, headers=dict(headers))
        return await self._acks.publish(subject, payload, headers=headers, timeout_s=timeout_s)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
    ) -> PubAck:
        """Publish and wait for the PubAck (the stored-and-durable receipt)."""
        if self._allowed is not None:
            self._allowed.check(subject)
        hdrs = outgoing_headers(msg_id, headers)
        if self._acks is None:
            return await self._js.publish(subject, payload, timeout=timeout_s, headers=hdrs)
        future = await self._acks.publish(subject, payload, headers=hdrs, timeout_s=timeout_s)
        return await future

    async def publish_async(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> asyncio.Future[PubAck]:
        """Send now, return the PubAck future: callers gather many before acking their input."""
        if self._allowed is not None:
            self._allowed.check(subject)
        hdrs = outgoing_headers(msg_id, headers)
        if self._acks is None:
            return await self._js.publish_async(subject, payload, headers=hdrs)
        return await self._acks.publish(subject, payload, headers=hdrs, timeout_s=timeout_s)
