"""P7, the archiver: drain a stream into the local object store, and restore it, each against a
raw nats-py loop that moves the same bytes, measured in the same run on the same server.

  drain    archiver  ``StreamDrain`` as the service runs it: batch pulls on the durable consumer
                     ``archiver-CHAT_INBOUND``, one JSON line per message (sequence, subject,
                     headers, publish time, the envelope), months by event time, zstd, one object
                     per chunk and month, manifests, the resume point in the ``archive`` KV
                     bucket, then the ack. events/s = N / (start -> resume point = last sequence).
           raw       ``PullSubscription.fetch(batch)`` on a durable ack-all consumer, the payloads
                     joined by newlines, zstd (same level), one ``obstore.put`` per chunk of the
                     same size into a local store, ack the chunk's last message.
  restore  archiver  ``restore.restore`` of the archiver's objects into a fresh stream: read the
                     manifests, merge the objects in sequence order, republish every message
                     with its original headers and Nats-Msg-Id (at most 5,000 awaiting their
                     PubAck, counted by a callback).
           raw       read the raw objects back, split the lines, ``publish_async`` each payload
                     with the same headers into a fresh stream, PubAcks gathered every 5,000.

Every run starts from a freshly provisioned CHAT_INBOUND pre-filled with N ~1 KB envelopes (half
in January, half in February, with the headers ingress sets), an empty archive directory and an
empty target stream. Both nats-server sync modes are measured, each against raw in that mode.

  uv run python bench/archiver.py                    # N=50000, 3 runs, both sync modes
  uv run python bench/archiver.py --quick            # N=20000, 1 run
  uv run python bench/archiver.py --sync default --count 100000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import obstore
import zstandard
from _common import (  # bench/ is on sys.path: scripts run as `python bench/<name>.py`
    SYNC_MODES,
    Deadline,
    bench_server,
    col,
    cpu_seconds,
    figure,
    log,
    median,
    proc_cpu_seconds,
    safe_ratio,
    stop_on_sigterm,
)
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError
from obstore.store import LocalStore

from zhongshu.archiver import restore
from zhongshu.archiver.adapters.objectstore import open_store
from zhongshu.archiver.adapters.statekv import StateStore
from zhongshu.archiver.drain import DrainOptions, StreamDrain
from zhongshu.archiver.layout import Month
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import MessageReceived
from zhongshu.contracts.examples import example

STREAM = streams.CHAT_INBOUND.name
TARGET = "RESTORED"
TARGET_PREFIX = "restored"
RAW_DURABLE = "bench-raw"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
P7_TARGET = 20_000.0
WINDOW = restore.WINDOW
MB = 1024 * 1024


# ---------------------------------------------------------------- the data


def events(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """N inbound events (~1 KB each) as ingress publishes them: subject, body, headers."""
    subject = subjects.chat_inbound("feishu", "acme")
    base = example(MessageReceived)
    jan, feb = datetime(2025, 1, 10, tzinfo=UTC), datetime(2025, 2, 10, tzinfo=UTC)
    out = []
    for i in range(n):
        event_id = f"evt-{i:08d}"
        message = msgspec.structs.replace(
            base,
            text=f"message {i}: please summarise yesterday's thread",
            platform_event_id=event_id,
        )
        moment = (jan if i < n // 2 else feb) + timedelta(seconds=i)
        env = wire.make_envelope(
            message, id=event_id, source="zhongshu/ingress-feishu", tenant="acme", time=moment
        )
        headers = {
            H.MSG_ID: event_id,
            H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
            H.TRACEPARENT: TRACEPARENT,
        }
        out.append((subject, wire.encode(env), headers))
    return out


async def connect(url: str) -> NatsClient:
    return await nats.connect(url, name="bench-archiver", pending_size=64 * MB, connect_timeout=5)


async def fresh_bus(url: str, data: list[tuple[str, bytes, dict[str, str]]]) -> None:
    """CHAT_INBOUND provisioned anew and pre-filled, the archive state and the target cleared."""
    from zhongshu.runtime.provision import provision, refused

    nc = await connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=20_000)
        for name in (STREAM, TARGET):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
        outcomes = await provision(js, (streams.CHAT_INBOUND,), (streams.ARCHIVE_KV,))
        if refused(outcomes):
            raise RuntimeError(f"provisioning refused: {refused(outcomes)}")
        with contextlib.suppress(Exception):
            await (await js.key_value(streams.ARCHIVE_KV.bucket)).purge(STREAM)
        await js.add_stream(StreamConfig(name=TARGET, subjects=[f"{TARGET_PREFIX}.>"]))
        futures = []
        for subject, body, headers in data:
            futures.append(await js.publish_async(subject, body, headers=headers))
            if len(futures) >= WINDOW:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        stored = (await js.stream_info(STREAM)).state.messages
        if stored != len(data):
            raise RuntimeError(f"pre-fill stored {stored} of {len(data)}")
    finally:
        await nc.close()


# ---------------------------------------------------------------- drains


async def drain_archiver(url: str, root: Path, a: argparse.Namespace) -> float:
    """Seconds for the archiver's drain to record the last sequence as archived."""
    nc = await connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=20_000)
        store = open_store(root.as_uri())
        states = await StateStore.open(js)
        last = int((await js.stream_info(STREAM)).state.last_seq)
        drain = StreamDrain(
            DrainOptions(
                stream=STREAM,
                zone=UTC,
                time_zone="UTC",
                batch=a.batch,
                poll_s=1.0,
                max_events=a.chunk,
                max_bytes=256 * MB,
                # Chunks fill by count (as raw's do); the age bound only writes a partial tail.
                max_age_s=1.0,
            ),
            nc=nc,
            js=js,
            store=store,
            states=states,
        )
        started = time.perf_counter()
        task = asyncio.create_task(drain.run())
        while drain.state.archived < last:
            if task.done():
                raise RuntimeError(f"the drain ended early: {task.exception()!r}")
            await asyncio.sleep(0.002)
        seconds = time.perf_counter() - started
        drain.stop()
        await asyncio.wait_for(task, 30)
        if (await states.load(STREAM)).archived != last:
            raise RuntimeError("the resume point does not name the last sequence")
        return seconds
    finally:
        await nc.close()


async def drain_raw(url: str, root: Path, a: argparse.Namespace) -> float:
    """Seconds for a plain fetch loop to write the same payloads, compressed, in chunks."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(STREAM, RAW_DURABLE)
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=RAW_DURABLE,
                ack_policy=AckPolicy.ALL,
                ack_wait=300,
                max_ack_pending=4 * a.chunk,
            ),
        )
        psub = await js.pull_subscribe_bind(
            RAW_DURABLE, STREAM, pending_msgs_limit=200_000, pending_bytes_limit=1024 * MB
        )
        store = LocalStore(root, mkdir=True)
        compressor = zstandard.ZstdCompressor(level=3)
        n = int((await js.stream_info(STREAM)).state.messages)
        got, part = 0, 0
        chunk: list[bytes] = []
        started = time.perf_counter()
        while got < n:
            try:
                msgs = await psub.fetch(a.batch, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            chunk.extend(m.data for m in msgs)
            got += len(msgs)
            if len(chunk) >= a.chunk or got >= n:
                data = compressor.compress(b"\n".join(chunk) + b"\n")
                await obstore.put_async(store, f"raw/{part:08d}.jsonl.zst", data)
                await msgs[-1].ack()
                chunk, part = [], part + 1
        return time.perf_counter() - started
    finally:
        await nc.close()


# ---------------------------------------------------------------- restores


async def restore_archiver(url: str, root: Path) -> float:
    nc = await connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=20_000)
        store = open_store(root.as_uri())
        plan = await restore.plan(store, STREAM, Month(2025, 1), Month(2025, 2))
        started = time.perf_counter()
        report = await restore.restore(nc, js, store, plan, restore.into(f"{TARGET_PREFIX}.>"))
        seconds = time.perf_counter() - started
        if report.published != plan.events or report.failed:
            raise RuntimeError(f"archiver restore: {report}")
        return seconds
    finally:
        await nc.close()


async def restore_raw(url: str, root: Path) -> float:
    nc = await connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=20_000)
        store = LocalStore(root, mkdir=True)
        decompressor = zstandard.ZstdDecompressor()
        subject = f"{TARGET_PREFIX}.raw"
        started = time.perf_counter()
        keys = sorted(m["path"] for batch in obstore.list(store, "raw/") for m in batch)
        futures, i = [], 0
        for key in keys:
            data = bytes(await (await obstore.get_async(store, key)).bytes_async())
            for body in decompressor.decompress(data).split(b"\n")[:-1]:
                # The same headers the archiver restores (the raw lines hold only the bodies).
                headers = {
                    H.MSG_ID: f"evt-{i:08d}",
                    H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
                    H.TRACEPARENT: TRACEPARENT,
                }
                futures.append(await js.publish_async(subject, body, headers=headers))
                i += 1
                if len(futures) >= WINDOW:
                    await asyncio.gather(*futures)
                    futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await nc.close()


# ---------------------------------------------------------------- orchestration


def run_loop(coro: Awaitable[float], loop: str) -> float:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


def measured(
    step: Callable[[], Awaitable[float]], loop: str, server_pid: int | None, n: int
) -> dict[str, float]:
    c0, s0 = cpu_seconds(), proc_cpu_seconds(server_pid)
    seconds = run_loop(step(), loop)
    return {
        "rate": n / seconds,
        "cpu_us": (cpu_seconds() - c0) / n * 1e6,
        "server_cpu_us": (proc_cpu_seconds(server_pid) - s0) / n * 1e6,
    }


def box_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_1m_before": os.getloadavg()[0]}
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/io").read_text().splitlines()[0].split()
        state["io_pressure_avg60_before"] = float(some[2].split("=")[1])
    return state


def measure(a: argparse.Namespace, sync: str, dl: Deadline) -> None:
    from zhongshu.archiver import metrics  # noqa: F401  (registered once, as in the service)

    box = box_state()
    data = events(a.count)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    with bench_server(sync, name="archiver") as (server, scratch):
        log(f"sync={sync}: nats-server {server.url} (pid {server.pid}), N={a.count}")
        for run in range(a.runs):
            order = ["archiver", "raw"] if run % 2 == 0 else ["raw", "archiver"]
            for impl in order:
                dl.check(f"run {run + 1} of {impl}")
                asyncio.run(fresh_bus(server.url, data))
                root = Path(tempfile.mkdtemp(prefix=f"{impl}-", dir=scratch))
                try:
                    if impl == "archiver":
                        d = measured(
                            partial(drain_archiver, server.url, root, a),
                            a.loop,
                            server.pid,
                            a.count,
                        )
                        r = measured(
                            partial(restore_archiver, server.url, root), a.loop, server.pid, a.count
                        )
                    else:
                        d = measured(
                            partial(drain_raw, server.url, root, a), a.loop, server.pid, a.count
                        )
                        r = measured(
                            partial(restore_raw, server.url, root), a.loop, server.pid, a.count
                        )
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                samples.setdefault(("drain", impl), []).append(d)
                samples.setdefault(("restore", impl), []).append(r)
                log(
                    f"sync={sync} run {run + 1}/{a.runs} {impl:<8}: drain {d['rate']:8.0f} ev/s "
                    f"({d['cpu_us']:.0f} us CPU/ev), restore {r['rate']:8.0f} ev/s "
                    f"({r['cpu_us']:.0f} us CPU/ev)"
                )
    for way in ("drain", "restore"):
        ours, raw = samples[(way, "archiver")], samples[(way, "raw")]
        value, baseline = median(col(ours, "rate")), median(col(raw, "rate"))
        figure(
            f"p7.archiver.{way}",
            value,
            "events/s",
            baseline,
            safe_ratio(value, baseline),
            count=a.count,
            sync=sync,
            runs=a.runs,
            loop=a.loop,
            batch=a.batch,
            chunk=a.chunk,
            value_runs=col(ours, "rate"),
            baseline_runs=col(raw, "rate"),
            cpu_us_per_event=median(col(ours, "cpu_us")),
            baseline_cpu_us_per_event=median(col(raw, "cpu_us")),
            server_cpu_us_per_event=median(col(ours, "server_cpu_us")),
            baseline_server_cpu_us_per_event=median(col(raw, "server_cpu_us")),
            target=f"value >= {P7_TARGET:.0f}",
            met=value >= P7_TARGET,
            **box,
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: N=20000, 1 run")
    ap.add_argument("--sync", default="always,default", help="nats-server sync modes, in order")
    ap.add_argument("--count", type=int, default=None, help="events per run (default 50000)")
    ap.add_argument("--runs", type=int, default=None, help="runs per impl (median; default 3)")
    ap.add_argument("--batch", type=int, default=5_000, help="messages per pull, both impls")
    ap.add_argument("--chunk", type=int, default=10_000, help="events per object, both impls")
    ap.add_argument(
        "--loop",
        default="uvloop",
        choices=["asyncio", "uvloop"],
        help="event loop (the service runs uvloop)",
    )
    ap.add_argument("--deadline", type=float, default=None, help="hard bound, whole run (s)")
    a = ap.parse_args(argv)
    a.count = a.count or (20_000 if a.quick else 50_000)
    a.runs = a.runs or (1 if a.quick else 3)
    a.deadline = a.deadline or (600.0 if a.quick else 1800.0)
    a.sync = [s.strip() for s in a.sync.split(",") if s.strip()]
    for s in a.sync:
        if s not in SYNC_MODES:
            ap.error(f"--sync: unknown mode {s!r} (use {','.join(SYNC_MODES)})")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    stop_on_sigterm()
    dl = Deadline(a.deadline)
    for sync in a.sync:
        measure(a, sync, dl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
