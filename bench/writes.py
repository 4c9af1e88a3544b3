"""P3's floor: what one durable JetStream write costs nats-server, against the same write with the
default sync, in the same run. Every event the hub answers is several such writes (inbound, the
router's claim, the reply, the delivery records, the outcome: `js_writes_per_event` in e2e.py),
so this sets how many events per second the bus alone allows on this box.

Figures (server CPU from /proc, per message; the client's is not counted):
  p3.floor.write       a publish with ``Nats-Msg-Id`` into a file stream, 64 in flight, awaited
                       PubAcks: ``sync_interval: always`` (value) against the default 2-minute
                       sync (baseline)
  p3.floor.deliver     the same messages pulled by a durable consumer (batches of 100) and acked
                       one by one: sync always against default

  uv run python bench/writes.py            # 20,000 messages per mode, 3 runs, median
  uv run python bench/writes.py --quick    # 5,000, 1 run
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import nats
from _common import Deadline, bench_server, figure, log, median, proc_cpu_seconds, safe_ratio
from nats.js.api import StreamConfig

IN_FLIGHT = 64
BODY = b"x" * 700  # about an inbound chat event


async def measure(url: str, pid: int | None, count: int) -> dict[str, float]:
    nc = await nats.connect(url, name="bench-writes")
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="WRITES", subjects=["writes.>"]))
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def publish(i: int) -> None:
            async with slots:
                await js.publish(f"writes.{i % 16}", BODY, headers={"Nats-Msg-Id": f"w-{i}"})

        cpu0, t0 = proc_cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(publish(i) for i in range(count)))
        cpu1, t1 = proc_cpu_seconds(pid), time.perf_counter()
        pull = await js.pull_subscribe("writes.>", durable="reader")
        got = 0
        while got < count:
            msgs = await pull.fetch(100, timeout=5)
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        await nc.flush()
        cpu2 = proc_cpu_seconds(pid)
        return {
            "write_us": (cpu1 - cpu0) / count * 1e6,
            "writes_per_s": count / (t1 - t0),
            "deliver_us": (cpu2 - cpu1) / count * 1e6,
        }
    finally:
        await nc.close()


def run_mode(sync: str, count: int, runs: int, dl: Deadline) -> dict[str, float]:
    rows = []
    for _ in range(runs):
        dl.check(f"sync {sync}")
        with bench_server(sync, name="writes") as (server, _scratch):
            rows.append(asyncio.run(measure(server.url, server.pid, count)))
        log(f"sync {sync}: {rows[-1]['write_us']:.0f} µs of server CPU per write, "
            f"{rows[-1]['writes_per_s']:.0f} writes/s, {rows[-1]['deliver_us']:.0f} µs "
            "per delivery + ack")  # fmt: skip
    return {key: median([row[key] for row in rows]) for key in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="5,000 messages, 1 run")
    ap.add_argument("--count", type=int, default=None, help="messages per run (20,000)")
    ap.add_argument("--runs", type=int, default=None, help="runs per mode, median (3)")
    ap.add_argument("--deadline", type=float, default=600.0, help="hard bound, whole run (s)")
    a = ap.parse_args()
    count = a.count or (5_000 if a.quick else 20_000)
    runs = a.runs or (1 if a.quick else 3)
    dl = Deadline(a.deadline)
    durable = run_mode("always", count, runs, dl)
    default = run_mode("default", count, runs, dl)
    extra: dict[str, Any] = {"count": count, "runs": runs, "in_flight": IN_FLIGHT}
    figure(
        "p3.floor.write",
        durable["write_us"],
        "µs server CPU per message",
        default["write_us"],
        safe_ratio(durable["write_us"], default["write_us"]),
        better="lower",
        impl="sync_interval: always",
        baseline_impl="default sync (2 min)",
        writes_per_s=durable["writes_per_s"],
        baseline_writes_per_s=default["writes_per_s"],
        **extra,
    )
    figure(
        "p3.floor.deliver",
        durable["deliver_us"],
        "µs server CPU per message",
        default["deliver_us"],
        safe_ratio(durable["deliver_us"], default["deliver_us"]),
        better="lower",
        impl="pull (batch 100) + ack, sync_interval: always",
        baseline_impl="the same, default sync",
        **extra,
    )


if __name__ == "__main__":
    main()
