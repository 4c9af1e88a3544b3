"""What the archiver's tests share: a bus of the test's own, events of known months published
fast, an archiver started in this process, and readers of what ended up in the archive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.adapters.statekv import StateStore
from zhongshu.archiver.layout import stream_prefix
from zhongshu.archiver.lines import ArchivedMessage, decode_lines
from zhongshu.archiver.main import build_service
from zhongshu.archiver.manifest import decode as decode_manifest
from zhongshu.archiver.settings import ArchiverSettings
from zhongshu.archiver.writer import decompress
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import MessageReceived, TaskRequested
from zhongshu.contracts.examples import example
from zhongshu.runtime import Service

JAN = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
FEB = datetime(2025, 2, 10, 8, 30, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Bus:
    url: str
    nc: NatsClient
    js: JetStreamContext


def month_time(i: int, count: int) -> datetime:
    """First half January, second half February, and every 97th event a late January one."""
    if i >= count // 2 and i % 97 != 0:
        return FEB + timedelta(seconds=i)
    return JAN + timedelta(seconds=i)


def envelope_bytes(stream: str, i: int, moment: datetime) -> tuple[str, bytes]:
    """(subject, payload) of the i-th test event of ``stream``; the id is unique per stream."""
    if stream == "TASKS":
        event: Any = msgspec.structs.replace(example(TaskRequested), task_id=f"t-{i}")
        subject = subjects.task_requested("acme")
    elif stream == "EVENTS":
        event = msgspec.structs.replace(example(TaskRequested), task_id=f"e-{i}")
        subject = subjects.events("ops", "deploys")
    else:
        event = msgspec.structs.replace(example(MessageReceived), text=f"message {i}")
        subject = subjects.chat_inbound("feishu", "acme")
    env = wire.make_envelope(
        event, id=f"{stream.lower()}-{i:07d}", source="zhongshu/test", tenant="acme", time=moment
    )
    return subject, wire.encode(env)


async def publish_events(
    js: JetStreamContext, stream: str, count: int, *, start: int = 0
) -> list[bytes]:
    """Publish ``count`` events (pipelined, every PubAck awaited); returns their payloads."""
    payloads = []
    futures = []
    for i in range(start, start + count):
        subject, payload = envelope_bytes(stream, i, month_time(i, start + count))
        payloads.append(payload)
        futures.append(
            await js.publish_async(
                subject,
                payload,
                headers={
                    H.MSG_ID: f"{stream.lower()}-{i:07d}",
                    H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
                    H.TRACEPARENT: TRACEPARENT,
                },
            )
        )
        if len(futures) >= 10_000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    return payloads


def settings(url: str, store_url: str, streams: Iterable[str], **extra: Any) -> ArchiverSettings:
    values: dict[str, Any] = {
        "nats_url": url,
        "object_store_url": store_url,
        "archive_streams": list(streams),
        "health_port": 0,
        "uvloop": False,
        "drain_timeout_s": 10,
        "archive_chunk_max_age_s": 0.5,
        "archive_fetch_expires_s": 0.3,
        "archive_lag_check_interval_s": 3600,
    }
    values.update(extra)
    return ArchiverSettings(**values)


async def start_archiver(settings: ArchiverSettings) -> Service:
    service = build_service()
    await service.start(settings)
    return service


async def stop_quietly(service: Service) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(service.stop(), 30)


async def last_seq(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.last_seq)


async def wait_archived(
    js: JetStreamContext, streams: Iterable[str], *, within_s: float = 60.0
) -> dict[str, int]:
    """Wait until the archive's resume point of every stream reaches its last sequence."""
    states = await StateStore.open(js)
    targets = {s: await last_seq(js, s) for s in streams}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        done = {s: (await states.load(s)).archived for s in targets}
        if all(done[s] >= targets[s] for s in targets):
            return done
        if loop.time() > deadline:
            raise AssertionError(f"archive did not catch up: {done} < {targets}")
        await asyncio.sleep(0.05)


async def archived_lines(store: ObjectStore, stream: str) -> list[ArchivedMessage]:
    """Every line the manifests of ``stream`` list, in sequence order (objects ignored when no
    manifest lists them)."""
    found: list[ArchivedMessage] = []
    for obj in await store.list(stream_prefix(stream)):
        if obj.key.endswith("manifest.json"):
            raw = await store.get(obj.key)
            assert raw is not None
            for entry in decode_manifest(raw, obj.key).objects:
                data = await store.get(entry.key)
                assert data is not None, entry.key
                found.extend(decode_lines(decompress(data)))
    found.sort(key=lambda line: line.seq)
    return found


async def stream_payloads(
    js: JetStreamContext, stream: str, *, within_s: float = 60.0
) -> list[tuple[str, bytes, str]]:
    """(subject, payload, Nats-Msg-Id) of every message in ``stream``, in order (read with an
    ordered push consumer: one direct get per message would take minutes for 10^5)."""
    expected = int((await js.stream_info(stream)).state.messages)
    found: list[tuple[str, bytes, str]] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        found.append((msg.subject, msg.data, (msg.headers or {}).get(H.MSG_ID, "")))
        if len(found) >= expected:
            done.set()

    if not expected:
        return found
    sub = await js.subscribe(
        ">", stream=stream, ordered_consumer=True, cb=on_msg, pending_msgs_limit=-1
    )
    try:
        await asyncio.wait_for(done.wait(), within_s)
    finally:
        await sub.unsubscribe()
    return found
