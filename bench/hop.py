"""P2, the router hop: consume ``chat.inbound.feishu.<tenant>`` (CHAT_INBOUND) -> decode
``Envelope[MessageReceived]`` -> classify -> build a ``CommandRequested`` envelope with id
``derive_msg_id(env.id, "router")`` -> publish to ``chat.command.feishu.<tenant>`` (CHAT_COMMANDS)
with ``Nats-Msg-Id`` -> ack the input after the PubAck.

Implementations of the worker (each its own process):
  raw         nats-py directly, the pipelined baseline: fetch(batch) -> decode/classify/encode ->
              publish_async every output with Nats-Msg-Id -> gather the PubAcks -> ack each input
  runtime     the same hop as a ``zhongshu.runtime.Service`` consumer (``publish_envelope``)
  faststream  FastStream 0.7.8 per-message pull subscriber, tuned: msgspec decoder, logger=None,
              apply_types=False, ``publish_async`` awaiting its PubAck (FastStream acks after)

Method (as the reference bench): separate processes for producer, worker and sink, on a
nats-server this script starts in a temporary directory on 127.0.0.1; fresh streams and a fresh
durable consumer (the runtime's own consumer config) before every measurement.
  throughput  the producer pre-fills CHAT_INBOUND with N events; then the worker alone drains it.
              msgs/s = N / (first message fetched -> consumer shows nothing pending or unacked).
  latency     sink (core NATS subscriber on chat.command.>) and worker running, the producer
              publishes at a fixed rate; latency = sink receipt - producer send, joined by id
              (CLOCK_MONOTONIC, shared by the processes); the first 5 % are warm-up.
Both nats-server sync modes are measured, each against the raw baseline in that mode and run.

  uv run python bench/hop.py                       # everything, defaults of PERFORMANCE.md
  uv run python bench/hop.py --quick               # smoke run: N=5000, 1 run, 5 s latency
  uv run python bench/hop.py --sync always --impls runtime --only throughput
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
from _common import (  # bench/ is on sys.path: scripts run as `python bench/<name>.py`
    SYNC_MODES,
    Child,
    Deadline,
    bench_server,
    col,
    cpu_seconds,
    figure,
    log,
    median,
    pct,
    proc_cpu_seconds,
    safe_ratio,
    stop_on_sigterm,
)
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import CommandRequested, MessageReceived
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id

SCRIPT = "hop.py"
STREAM_IN = streams.CHAT_INBOUND.name
STREAM_OUT = streams.CHAT_COMMANDS.name
DURABLE = "router"
STAGE = "router"
ROUTER_STAGE = "router.command"  # zhongshu.router.domain.STAGE_COMMAND
PLATFORM = "feishu"
TENANT = "acme"
SOURCE_IN = "zhongshu/ingress-feishu"
SOURCE_OUT = "zhongshu/router"
IMPLS = ("raw", "runtime", "faststream", "router")
P2_MIN_RATIO = 0.5
P2_MAX_P99_MS = 10.0
MB = 1024 * 1024


# ---------------------------------------------------------------- the hop's work (all impls)

_TEXTS = (
    "/summarize 3d",
    "what did we decide about the launch date? please remind me of the owners too",
    "/todo add review the Q3 budget before Friday",
    "thanks, that helps a lot",
)


def inbound_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i:07d}"


def inbound_event(prefix: str, i: int) -> tuple[str, bytes]:
    """The i-th inbound event (~1 KB, as ingress-feishu would publish it): id and bytes."""
    event_id = inbound_id(prefix, i)
    message = msgspec.structs.replace(
        example(MessageReceived),
        text=_TEXTS[i % len(_TEXTS)],
        platform_event_id=event_id,
        platform_message_id=f"om_{i:024d}",
    )
    env = wire.make_envelope(
        message,
        id=event_id,
        source=SOURCE_IN,
        tenant=TENANT,
        conversation_id=message.chat_id,
    )
    return event_id, wire.encode(env)


def classify(text: str) -> tuple[str, tuple[str, ...], str]:
    """The router's decision, kept trivial: ``/name args`` is command ``name``, else ``chat``."""
    if text.startswith("/"):
        name, _, rest = text[1:].partition(" ")
        return name.lower() or "help", tuple(rest.split()), rest
    return "chat", (), text


def route(env: Envelope[MessageReceived]) -> tuple[str, Envelope[CommandRequested]]:
    """One inbound envelope -> (output subject, CommandRequested envelope)."""
    message = env.data
    command, args, rest = classify(message.text)
    out = wire.make_envelope(
        CommandRequested(command=command, args=args, text=rest, message=message),
        id=derive_msg_id(env.id, STAGE),
        source=SOURCE_OUT,
        tenant=env.tenant,
        conversation_id=env.conversation_id,
        correlation_id=env.correlation_id or env.id,
    )
    return subjects.chat_command(message.platform, message.tenant), out


def consumer_config() -> Any:
    """The durable consumer every impl uses: the runtime's own config for this consumer."""
    from zhongshu.runtime.consumer import ConsumerSpec

    async def unused(data: object, delivery: object) -> None:  # pragma: no cover
        return None

    spec: ConsumerSpec[Any] = ConsumerSpec(
        stream=STREAM_IN,
        durable=DURABLE,
        subjects=(subjects.ALL_CHAT_INBOUND,),
        handler=unused,
        decode=bytes,
    )
    return spec.consumer_config()


# ---------------------------------------------------------------- role: worker


class Progress:
    """Messages handled by this worker; ``done`` once ``expect`` were handled."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.n = 0
        self.t_first: float | None = None
        self.done = asyncio.Event()

    def first(self) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()

    def tick(self, k: int = 1) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.n += k
        if self.n >= self.expect:
            self.done.set()


async def settle(js: JetStreamContext, timeout_s: float) -> bool:
    """Wait until the consumer has nothing pending and nothing unacked (every input acked after
    its output's PubAck): the end of a drain, measured the same way for every impl."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            info = await js.consumer_info(STREAM_IN, DURABLE)
            if not info.num_pending and not info.num_ack_pending:
                return True
        await asyncio.sleep(0.001)
    return False


class Worker:
    """What every impl shares: READY marker, CPU and time accounting, optional cProfile."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.progress = Progress(a.expect)
        self.deadline = Deadline(a.max_seconds)
        self.profile = cProfile.Profile() if a.profile else None
        self.c0 = self.t_ready = 0.0

    def ready(self) -> None:
        self.c0, self.t_ready = cpu_seconds(), time.perf_counter()
        if self.profile is not None:
            self.profile.enable()
        print("READY", flush=True)

    async def wait_done(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.progress.done.wait(), self.deadline.remaining())

    async def finish(self, js: JetStreamContext) -> None:
        settled = await settle(js, max(1.0, min(30.0, self.deadline.remaining())))
        t_end, cpu = time.perf_counter(), cpu_seconds() - self.c0
        if self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(self.a.profile)
        t_first = self.progress.t_first or t_end
        result = {
            "impl": self.a.impl,
            "processed": self.progress.n,
            "settled": settled,
            "seconds": t_end - t_first,
            "cpu": cpu,
            "wall": t_end - self.t_ready,
        }
        print(json.dumps(result), flush=True)


async def worker_raw(w: Worker) -> None:
    """The baseline, exactly the reference raw pipelined worker on the contracts' codec."""
    a = w.a
    nc = await nats.connect(a.url, name="bench-raw", pending_size=64 * MB)
    js = nc.jetstream(publish_async_max_pending=20_000)
    psub = await js.pull_subscribe_bind(DURABLE, STREAM_IN, pending_msgs_limit=100_000)
    dec = wire.decoder(MessageReceived)
    progress = w.progress
    w.ready()
    while progress.n < a.expect and not w.deadline.expired():
        try:
            msgs = await psub.fetch(a.batch, timeout=a.fetch_timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        progress.first()
        futures = []
        for m in msgs:
            subject, out = route(dec.decode(m.data))
            futures.append(
                await js.publish_async(subject, wire.encode(out), headers={H.MSG_ID: out.id})
            )
        await asyncio.gather(*futures)
        for m in msgs:
            await m.ack()
        progress.tick(len(msgs))
    await w.finish(js)
    await nc.close()


async def worker_runtime(w: Worker) -> None:
    """The hop as a ``zhongshu.runtime.Service`` consumer, as the router service will write it."""
    from zhongshu.runtime import Delivery, Service, ServiceSettings

    a, progress = w.a, w.progress
    service = Service("bench-router")

    @service.consumes(
        stream=STREAM_IN,
        subjects=subjects.ALL_CHAT_INBOUND,
        durable=DURABLE,
        event=MessageReceived,
        batch=a.batch,
        busy_fetch_timeout_s=a.fetch_timeout,
    )
    async def on_message(deps: None, env: Envelope[MessageReceived], delivery: Delivery) -> None:
        subject, out = route(env)
        await delivery.publish_envelope(subject, out)
        progress.tick()

    await service.start(
        ServiceSettings(nats_url=a.url, health_host="127.0.0.1", health_port=0, drain_timeout_s=5)
    )
    w.ready()
    await w.wait_done()
    await w.finish(service.js)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(service.stop(), 15)


async def worker_router(w: Worker) -> None:
    """The real router service (whitelist, group rules, classification, then the command),
    with its own Redis. No rate limits are configured, so the hop makes no Redis call: the
    figure is the router's own work on top of the runtime (a per-user limit adds one Redis
    round trip per message)."""
    import tempfile

    from zhongshu.devstack import RedisServer, free_port
    from zhongshu.router.main import build_service
    from zhongshu.router.settings import RouterSettings
    from zhongshu.runtime.hubconfig import HubConfig
    from zhongshu.runtime.liveconfig import StaticConfig
    from zhongshu.runtime.routing import DEFAULT_COMMANDS, CommandSpec, RoutingRules

    a = w.a
    message = example(MessageReceived)
    config = HubConfig.model_validate(
        {
            "apps": {
                message.app: {
                    "tenant": message.tenant,
                    "platform": "feishu",
                    "feishu": {"app_id": "cli_bench", "app_secret": "s"},
                    "group": {"require_mention": False, "prefixes": []},
                }
            }
        }
    )
    rules = RoutingRules(
        commands=(*DEFAULT_COMMANDS, CommandSpec(name="summarize"), CommandSpec(name="todo"))
    )
    with tempfile.TemporaryDirectory(prefix="zhongshu-bench-router-") as tmp:
        redis = RedisServer(Path(tmp), port=free_port()).start()
        try:
            service = build_service(config=StaticConfig(config), rules=rules)
            await service.start(
                RouterSettings(
                    nats_url=a.url,
                    redis_url=redis.url,
                    health_host="127.0.0.1",
                    health_port=0,
                    drain_timeout_s=5,
                )
            )
            w.ready()
            await progress_from_stream(w, service.js)
            await w.finish(service.js)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service.stop(), 15)
        finally:
            redis.stop()


async def progress_from_stream(w: Worker, js: JetStreamContext) -> None:
    """For a service whose handler the bench does not own: progress is the outputs stored."""
    first = True
    while not w.progress.done.is_set():
        stored = (await js.stream_info(STREAM_OUT)).state.messages
        if stored and first:
            w.progress.first()
            first = False
        if stored > w.progress.n:
            w.progress.tick(stored - w.progress.n)
        await asyncio.sleep(0.01)


async def worker_faststream(w: Worker) -> None:
    """FastStream 0.7.8, per-message pull subscriber, tuned (``tuned-async`` of the reference)."""
    from faststream.nats import JStream, NatsBroker, PullSub

    a, progress = w.a, w.progress
    dec = wire.decoder(MessageReceived)
    broker = NatsBroker(
        a.url,
        logger=None,
        apply_types=False,
        pending_size=64 * MB,
        js_options={"publish_async_max_pending": 20_000},
    )
    state: dict[str, JetStreamContext] = {}

    async def decoder(msg: Any) -> Envelope[MessageReceived]:
        return dec.decode(msg.body)

    @broker.subscriber(
        subjects.ALL_CHAT_INBOUND,
        stream=JStream(STREAM_IN, declare=False),
        durable=DURABLE,
        decoder=decoder,
        pull_sub=PullSub(batch_size=a.batch, timeout=a.fetch_timeout),
    )
    async def on_message(env: Envelope[MessageReceived]) -> None:
        subject, out = route(env)
        future = await state["js"].publish_async(
            subject, wire.encode(out), headers={H.MSG_ID: out.id}
        )
        await future
        progress.tick()  # returning -> FastStream acks the input

    await broker.start()
    js: JetStreamContext = broker.config.connection_state.stream
    state["js"] = js
    w.ready()
    await w.wait_done()
    await w.finish(js)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.stop(), 15)


WORKERS: dict[str, Callable[[Worker], Coroutine[Any, Any, None]]] = {
    "raw": worker_raw,
    "runtime": worker_runtime,
    "router": worker_router,
    "faststream": worker_faststream,
}


# ---------------------------------------------------------------- role: producer


async def role_producer(a: argparse.Namespace) -> None:
    """Burst (``--rate 0``: pre-fill N events) or a fixed rate in 5 ms ticks; with ``--out``
    writes each event's send time (CLOCK_MONOTONIC ns, index = event number)."""
    nc = await nats.connect(a.url, name="bench-producer", pending_size=64 * MB)
    js = nc.jetstream(publish_async_max_pending=20_000)
    subject = subjects.chat_inbound(PLATFORM, TENANT)
    n, deadline = a.count, Deadline(a.max_seconds)
    sent_ns = [0] * n
    sent = 0
    t0 = time.perf_counter()
    if a.rate <= 0:
        events = [inbound_event(a.prefix, i) for i in range(n)]
        t0 = time.perf_counter()
        for event_id, data in events:
            await js.publish_async(subject, data, headers={H.MSG_ID: event_id})
            sent += 1
    else:
        while sent < n and not deadline.expired():
            due = min(n, int((time.perf_counter() - t0) * a.rate) + 1)
            while sent < due:
                event_id, data = inbound_event(a.prefix, sent)
                sent_ns[sent] = time.monotonic_ns()
                await js.publish_async(subject, data, headers={H.MSG_ID: event_id})
                sent += 1
            await asyncio.sleep(0.005)
    await asyncio.wait_for(js.publish_async_completed(), max(5.0, deadline.remaining()))
    elapsed = time.perf_counter() - t0
    if a.out:
        await asyncio.to_thread(Path(a.out).write_bytes, msgspec.json.encode(sent_ns[:sent]))
    print(json.dumps({"sent": sent, "seconds": elapsed}), flush=True)
    await nc.close()


# ---------------------------------------------------------------- role: sink


async def role_sink(a: argparse.Namespace) -> None:
    """Core NATS subscriber on chat.command.>: (Nats-Msg-Id, CLOCK_MONOTONIC ns) per output."""
    nc: NatsClient = await nats.connect(a.url, name="bench-sink", pending_size=64 * MB)
    received: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        now = time.monotonic_ns()
        received.append(((msg.headers or {}).get(H.MSG_ID, ""), now))
        if len(received) >= a.expect:
            done.set()

    await nc.subscribe(subjects.ALL_CHAT_COMMANDS, cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.flush()
    print("READY", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), a.max_seconds)
    await asyncio.to_thread(Path(a.out).write_bytes, msgspec.json.encode(received))
    print(json.dumps({"received": len(received)}), flush=True)
    await nc.close()


# ---------------------------------------------------------------- orchestration


async def _connect(url: str) -> NatsClient:
    return await nats.connect(url, name="bench-orchestrator", connect_timeout=5)


async def fresh_streams(url: str) -> None:
    """Delete CHAT_INBOUND, CHAT_COMMANDS and the router's claims (the ``dedupe`` bucket: every
    run sends the same event ids), provision them again as contracts declare them, and create
    the durable consumer (the runtime's config, shared by every impl)."""
    from zhongshu.runtime.provision import provision, refused

    nc = await _connect(url)
    try:
        js = nc.jetstream()
        for name in (streams.CHAT_INBOUND.name, streams.CHAT_COMMANDS.name, "KV_dedupe"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
        # The router also watches the grants (empty here: the whitelist decides).
        outcomes = await provision(
            js,
            (streams.CHAT_INBOUND, streams.CHAT_COMMANDS),
            (streams.DEDUPE_KV, streams.GRANTS_KV),
        )
        if refused(outcomes):
            raise RuntimeError(f"provisioning refused: {refused(outcomes)}")
        await js.add_consumer(STREAM_IN, consumer_config())
    finally:
        await nc.close()


async def bus_state(url: str) -> dict[str, int]:
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        info = await js.consumer_info(STREAM_IN, DURABLE)
        return {
            "inbound": (await js.stream_info(STREAM_IN)).state.messages,
            "commands": (await js.stream_info(STREAM_OUT)).state.messages,
            "pending": info.num_pending or 0,
            "ack_pending": info.num_ack_pending or 0,
            "redelivered": info.num_redelivered or 0,
        }
    finally:
        await nc.close()


def role_args(role: str, **options: object) -> list[str]:
    """``role --opt-name value ...`` for a role process of this script."""
    args = [role]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def worker_args(a: argparse.Namespace, impl: str, url: str, expect: int, max_s: float) -> list[str]:
    return role_args(
        "worker",
        impl=impl,
        url=url,
        expect=expect,
        batch=a.batch,
        fetch_timeout=a.fetch_timeout,
        max_seconds=max_s,
        loop=a.loop,
    )


def order_for(impls: list[str], run: int) -> list[str]:
    """Rotate the impls from run to run, so slow drift of the box does not favour one."""
    k = run % len(impls)
    return impls[k:] + impls[:k]


def measure_throughput(
    a: argparse.Namespace, url: str, server_pid: int | None, scratch: Path, dl: Deadline, sync: str
) -> dict[str, list[dict[str, float]]]:
    impls = ["raw", *a.impls]
    samples: dict[str, list[dict[str, float]]] = {impl: [] for impl in impls}
    n = a.count
    for run in range(a.runs):
        for impl in order_for(impls, run):
            dl.check(f"throughput run {run + 1} of {impl}")
            asyncio.run(fresh_streams(url))
            fill = Child(
                SCRIPT,
                role_args("producer", url=url, count=n, rate=0, prefix="in", max_seconds=240),
                log_dir=scratch,
                name=f"producer-fill-{impl}-{run}",
            )
            fill.result(300)
            state = asyncio.run(bus_state(url))
            if state["inbound"] != n:
                raise RuntimeError(f"pre-fill stored {state['inbound']} of {n} events")
            args = worker_args(a, impl, url, n, 240)
            if a.profile:
                prof = Path(a.profile) / f"hop-{sync}-{impl}-run{run}.prof"
                prof.parent.mkdir(parents=True, exist_ok=True)
                args += ["--profile", str(prof)]
            worker = Child(SCRIPT, args, log_dir=scratch, name=f"worker-{impl}-{run}")
            worker.wait_ready()
            s0 = proc_cpu_seconds(server_pid)
            r = worker.result(300)
            server_cpu = proc_cpu_seconds(server_pid) - s0
            state = asyncio.run(bus_state(url))
            if r["processed"] < n or not r["settled"] or state["commands"] != n:
                raise RuntimeError(
                    f"{impl} throughput run {run + 1}: worker {r}, bus {state} (expected {n})"
                )
            rate = n / r["seconds"]
            samples[impl].append(
                {
                    "rate": rate,
                    "cpu_us": r["cpu"] / n * 1e6,
                    "server_cpu_us": server_cpu / n * 1e6,
                    "redelivered": state["redelivered"],
                }
            )
            log(
                f"sync={sync} throughput {impl:<10} run {run + 1}/{a.runs}: {rate:8.0f} msgs/s, "
                f"worker {r['cpu'] / n * 1e6:.0f} us/msg CPU"
            )
    return samples


def latencies(prefix: str, sent_ns: list[int], received: list[list[Any]]) -> dict[str, Any]:
    """Join producer send times and sink receipts by id: p50/p90/p99/max after warm-up, and the
    number of events lost (never seen by the sink) and duplicated (seen twice)."""
    # The bench's own workers derive their output id with STAGE, the router service with its
    # own stage name: join on either.
    index = {
        derive_msg_id(inbound_id(prefix, i), stage): i
        for i in range(len(sent_ns))
        for stage in (STAGE, ROUTER_STAGE)
    }
    lat: list[float | None] = [None] * len(sent_ns)
    duplicates = unknown = 0
    for out_id, ns in received:
        i = index.get(out_id)
        if i is None:
            unknown += 1
        elif lat[i] is not None:
            duplicates += 1
        else:
            lat[i] = (ns - sent_ns[i]) / 1e6
    arrivals = [ns for _, ns in received]
    # How far the hop fell behind the offered rate: last output's arrival - last input's send.
    lag = (max(arrivals) - max(sent_ns)) / 1e6 if arrivals and sent_ns else float("nan")
    warm = len(lat) // 20  # the first 5 % are warm-up
    body = [x for x in lat[warm:] if x is not None]
    return {
        "p50": pct(body, 50),
        "p90": pct(body, 90),
        "p99": pct(body, 99),
        "max": max(body) if body else float("nan"),
        "lag": lag,
        "lost": sum(1 for x in lat if x is None),
        "duplicates": duplicates,
        "unknown": unknown,
    }


def measure_latency(
    a: argparse.Namespace, url: str, scratch: Path, dl: Deadline, sync: str
) -> dict[str, list[dict[str, float]]]:
    impls = ["raw", *a.impls]
    samples: dict[str, list[dict[str, float]]] = {impl: [] for impl in impls}
    n = int(a.rate * a.seconds)
    for run in range(a.runs):
        for impl in order_for(impls, run):
            dl.check(f"latency run {run + 1} of {impl}")
            asyncio.run(fresh_streams(url))
            tag = f"{impl}-{run}"
            sent_file, recv_file = scratch / f"sent-{tag}.json", scratch / f"recv-{tag}.json"
            sink = Child(
                SCRIPT,
                role_args("sink", url=url, expect=n, out=recv_file, max_seconds=a.seconds + 20),
                log_dir=scratch,
                name=f"sink-{tag}",
            )
            sink.wait_ready()
            worker = Child(
                SCRIPT,
                worker_args(a, impl, url, n, a.seconds + 40),
                log_dir=scratch,
                name=f"worker-{tag}",
            )
            worker.wait_ready()
            producer = Child(
                SCRIPT,
                role_args(
                    "producer",
                    url=url,
                    count=n,
                    rate=a.rate,
                    prefix="in",
                    out=sent_file,
                    max_seconds=a.seconds + 20,
                ),
                log_dir=scratch,
                name=f"producer-{tag}",
            )
            sent = producer.result(a.seconds + 60)["sent"]
            sink.result(30)
            r = worker.result(60)
            stats = latencies(
                "in",
                msgspec.json.decode(sent_file.read_bytes()),
                msgspec.json.decode(recv_file.read_bytes()),
            )
            if sent != n or stats["lost"] or stats["duplicates"]:
                log(f"WARNING {impl} latency run {run + 1}: sent {sent}/{n}, {stats}")
            stats["cpu_us"] = r["cpu"] / max(1, r["processed"]) * 1e6
            stats["cpu_pct"] = r["cpu"] / r["wall"] * 100 if r["wall"] else float("nan")
            samples[impl].append(stats)
            log(
                f"sync={sync} latency {impl:<10} run {run + 1}/{a.runs}: p50 {stats['p50']:.2f} "
                f"ms, p99 {stats['p99']:.2f} ms, max {stats['max']:.1f} ms, "
                f"lag {stats['lag']:.0f} ms, "
                f"worker {stats['cpu_pct']:.0f} % of a core"
            )
    return samples


def report(
    a: argparse.Namespace,
    sync: str,
    tp: dict[str, list[dict[str, float]]],
    lat: dict[str, list[dict[str, float]]],
    box: dict[str, Any],
) -> None:
    common = {
        "sync": sync,
        "runs": a.runs,
        "batch": a.batch,
        "loop": a.loop,
        "baseline_impl": "raw",
        **box,
    }
    for impl in a.impls:
        if tp:
            value, base = median(col(tp[impl], "rate")), median(col(tp["raw"], "rate"))
            ratio = safe_ratio(value, base)
            figure(
                "p2.hop.throughput",
                value,
                "msgs/s",
                base,
                ratio,
                impl=impl,
                count=a.count,
                **common,
                worker_cpu_us_per_msg=median(col(tp[impl], "cpu_us")),
                baseline_worker_cpu_us_per_msg=median(col(tp["raw"], "cpu_us")),
                server_cpu_us_per_msg=median(col(tp[impl], "server_cpu_us")),
                baseline_server_cpu_us_per_msg=median(col(tp["raw"], "server_cpu_us")),
                value_runs=col(tp[impl], "rate"),
                baseline_runs=col(tp["raw"], "rate"),
                target=f"ratio >= {P2_MIN_RATIO}",
                met=bool(ratio >= P2_MIN_RATIO),
            )
        if lat:
            n = int(a.rate * a.seconds)
            for q in ("p50", "p99"):
                value, base = median(col(lat[impl], q)), median(col(lat["raw"], q))
                lost = sum(col(lat[impl], "lost"))
                duplicates = sum(col(lat[impl], "duplicates"))
                extra: dict[str, Any] = {}
                if q == "p99":  # a latency with lost or doubled messages does not count
                    extra = {
                        "target": f"value <= {P2_MAX_P99_MS} ms, none lost or duplicated",
                        "met": bool(value <= P2_MAX_P99_MS and not lost and not duplicates),
                    }
                figure(
                    f"p2.hop.latency.{q}",
                    value,
                    "ms",
                    base,
                    safe_ratio(value, base),
                    better="lower",
                    impl=impl,
                    count=n,
                    rate=a.rate,
                    seconds=a.seconds,
                    fetch_timeout=a.fetch_timeout,
                    **common,
                    worker_cpu_us_per_msg=median(col(lat[impl], "cpu_us")),
                    baseline_worker_cpu_us_per_msg=median(col(lat["raw"], "cpu_us")),
                    worker_cpu_pct_of_core=median(col(lat[impl], "cpu_pct")),
                    value_runs=col(lat[impl], q),
                    baseline_runs=col(lat["raw"], q),
                    max_ms=max(col(lat[impl], "max")),
                    lag_ms=median(col(lat[impl], "lag")),
                    baseline_lag_ms=median(col(lat["raw"], "lag")),
                    lost=lost,
                    duplicates=duplicates,
                    baseline_lost=sum(col(lat["raw"], "lost")),
                    **extra,
                )


def box_state() -> dict[str, Any]:
    """How busy the shared box was before this sync mode started its own processes."""
    state: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_1m_before": os.getloadavg()[0]}
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/io").read_text().splitlines()[0].split()
        state["io_pressure_avg60_before"] = float(some[2].split("=")[1])
    return state


def orchestrate(a: argparse.Namespace) -> int:
    from zhongshu.devstack.testing import provision_all

    stop_on_sigterm()
    dl = Deadline(a.deadline)
    try:
        for sync in a.sync:
            box = box_state()
            with bench_server(sync, name="hop") as (server, scratch):
                log(f"sync={sync}: nats-server {server.url} (pid {server.pid})")
                asyncio.run(provision_all(server.url))
                tp = (
                    measure_throughput(a, server.url, server.pid, scratch, dl, sync)
                    if a.only in ("all", "throughput")
                    else {}
                )
                lat = (
                    measure_latency(a, server.url, scratch, dl, sync)
                    if a.only in ("all", "latency")
                    else {}
                )
                report(a, sync, tp, lat, box)
    finally:
        Child.kill_all()
    return 0


# ---------------------------------------------------------------- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("role", nargs="?", default="run", choices=["run", "worker", "producer", "sink"])
    ap.add_argument("--quick", action="store_true", help="smoke run: N=5000, 1 run, 5 s latency")
    ap.add_argument("--sync", default="always,default", help="nats-server sync modes, in order")
    ap.add_argument(
        "--impls", default="runtime,faststream", help="impls measured against raw (comma list)"
    )
    ap.add_argument("--only", default="all", choices=["all", "throughput", "latency"])
    ap.add_argument("--count", type=int, default=None, help="pre-filled events (default 20000)")
    ap.add_argument("--runs", type=int, default=None, help="runs per impl (median; default 3)")
    ap.add_argument("--rate", type=float, default=1000.0, help="latency: producer msgs/s")
    ap.add_argument("--seconds", type=float, default=None, help="latency: duration (default 15)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--fetch-timeout", type=float, default=0.02)
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"], help="worker loop")
    ap.add_argument("--deadline", type=float, default=None, help="hard bound, whole run (s)")
    ap.add_argument("--profile", default=None, help="dir for cProfile of throughput workers")
    # options of the role processes (set by the orchestrator)
    ap.add_argument("--impl", default="raw", choices=IMPLS)
    ap.add_argument("--url", default="")
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--prefix", default="in")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    quick = a.quick
    a.count = a.count or (5_000 if quick else 20_000)
    a.runs = a.runs or (1 if quick else 3)
    a.seconds = a.seconds or (5.0 if quick else 15.0)
    a.deadline = a.deadline or (900.0 if quick else 3600.0)
    a.sync = [s.strip() for s in a.sync.split(",") if s.strip()]
    a.impls = [i.strip() for i in a.impls.split(",") if i.strip() and i.strip() != "raw"]
    for s in a.sync:
        if s not in SYNC_MODES:
            ap.error(f"--sync: unknown mode {s!r} (use {','.join(SYNC_MODES)})")
    for i in a.impls:
        if i not in IMPLS:
            ap.error(f"--impls: unknown impl {i!r} (use {','.join(IMPLS[1:])})")
    if a.role == "run" and not a.impls:
        ap.error("--impls: name at least one impl to compare with raw")
    if a.role != "run" and not a.url.startswith("nats://127.0.0.1:"):
        ap.error("roles talk only to a bench server on nats://127.0.0.1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.role == "run":
        return orchestrate(a)
    if a.role == "worker":
        coro = WORKERS[a.impl](Worker(a))
        if a.loop == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
    elif a.role == "producer":
        asyncio.run(role_producer(a))
    else:
        asyncio.run(role_sink(a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
