"""Process metrics beyond prometheus_client's default collector (CPU seconds, resident memory,
open fds): the process's IO, what it may use (its cgroup's CPU and memory limits, else the
machine's) and the disk under its data directory, so a rule can say "above 70 %" (R14, R15).
Read on each scrape; registered once per process by the side port (``health.build_app``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
# The hub's data directory (``zhongshu up --data-dir``, the image's volume) is ./data; where a
# service has none, its working directory's filesystem is the one it writes to.
DATA_DIR = Path("data")


def read_io(proc: Path = PROC) -> dict[str, int]:
    """``/proc/self/io`` as numbers (empty where the kernel hides it, as some sandboxes do)."""
    try:
        text = (proc / "self" / "io").read_text()
    except OSError:
        return {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            values[key.strip()] = int(value)
    return values


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_limit_cores(cgroup: Path = CGROUP) -> float:
    """The cores this process may use: its cgroup's quota (v2 ``cpu.max``, v1 CFS quota), else
    the CPUs it may run on."""
    available = float(len(os.sched_getaffinity(0)))
    quota: float | None = None
    v2 = _read(cgroup / "cpu.max")
    if v2 is not None:
        limit, _, period = v2.partition(" ")
        if limit != "max" and limit.isdigit() and period.isdigit() and int(period) > 0:
            quota = int(limit) / int(period)
    else:
        limit_us = _read(cgroup / "cpu" / "cpu.cfs_quota_us")
        period_us = _read(cgroup / "cpu" / "cpu.cfs_period_us")
        if limit_us and period_us and limit_us.isdigit() and period_us.isdigit():
            quota = int(limit_us) / int(period_us) if int(period_us) > 0 else None
    return min(available, quota) if quota else available


def memory_total_bytes(proc: Path = PROC) -> int | None:
    meminfo = _read(proc / "meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def memory_limit_bytes(cgroup: Path = CGROUP, proc: Path = PROC) -> int | None:
    """The memory this process may use: its cgroup's limit (v2 ``memory.max``, v1
    ``limit_in_bytes``), never more than the machine has."""
    total = memory_total_bytes(proc)
    raw = _read(cgroup / "memory.max") or _read(cgroup / "memory" / "memory.limit_in_bytes")
    if raw is not None and raw.isdigit():
        limit = int(raw)
        return min(limit, total) if total else limit
    return total


class ProcessResourcesCollector(Collector):
    """``process_io_*`` from /proc/self/io; ``zhongshu_process_cpu_limit_cores``,
    ``zhongshu_process_memory_limit_bytes`` and the data directory's filesystem size and
    available bytes."""

    def __init__(self, data_dir: Path = DATA_DIR, proc: Path = PROC, cgroup: Path = CGROUP):
        self.data_dir, self.proc, self.cgroup = data_dir, proc, cgroup

    def collect(self) -> Iterable[Metric]:
        yield from self._io()
        yield GaugeMetricFamily(
            "zhongshu_process_cpu_limit_cores",
            "Cores this process may use (cgroup quota, else its CPUs): divides "
            "rate(process_cpu_seconds_total) into a share",
            value=cpu_limit_cores(self.cgroup),
        )
        memory = memory_limit_bytes(self.cgroup, self.proc)
        if memory is not None:
            yield GaugeMetricFamily(
                "zhongshu_process_memory_limit_bytes",
                "Memory this process may use (cgroup limit, else the machine's): divides "
                "process_resident_memory_bytes into a share",
                value=memory,
            )
        yield from self._disk()

    def _io(self) -> Iterator[Metric]:
        io = read_io(self.proc)
        for name, key, what in (
            (
                "process_io_read_bytes",
                "read_bytes",
                "Bytes this process caused to be read from storage",
            ),
            (
                "process_io_write_bytes",
                "write_bytes",
                "Bytes this process caused to be written to storage",
            ),
            ("process_io_read_chars", "rchar", "Bytes read through read-like system calls"),
            ("process_io_write_chars", "wchar", "Bytes written through write-like system calls"),
        ):
            if key in io:
                yield CounterMetricFamily(name, what, value=io[key])

    def _disk(self) -> Iterator[Metric]:
        path = self.data_dir if self.data_dir.is_dir() else Path.cwd()
        try:
            stat = os.statvfs(path)
        except OSError:
            return
        label = str(path.absolute())
        size = GaugeMetricFamily(
            "zhongshu_filesystem_size_bytes",
            "Size of the filesystem holding the data directory",
            labels=["path"],
        )
        size.add_metric([label], stat.f_blocks * stat.f_frsize)
        avail = GaugeMetricFamily(
            "zhongshu_filesystem_avail_bytes",
            "Bytes of that filesystem available to this process",
            labels=["path"],
        )
        avail.add_metric([label], stat.f_bavail * stat.f_frsize)
        yield size
        yield avail


_lock = threading.Lock()
_registered: set[int] = set()


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Add the collector to ``registry`` once (any later call is a no-op)."""
    with _lock:
        if id(registry) in _registered:
            return
        registry.register(ProcessResourcesCollector())
        _registered.add(id(registry))
