"""The process collector's readings, from fake /proc and cgroup files and from this process."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zhongshu.runtime import procmetrics
from zhongshu.runtime.procmetrics import ProcessResourcesCollector


def _fake_proc(root: Path, io: str, mem_kib: int = 8 * 1024 * 1024) -> Path:
    (root / "self").mkdir(parents=True)
    (root / "self" / "io").write_text(io)
    (root / "meminfo").write_text(f"MemTotal:       {mem_kib} kB\nMemFree: 1 kB\n")
    return root


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_io_counters_come_from_proc_self_io(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path / "proc",
        "rchar: 100\nwchar: 200\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\n"
        "cancelled_write_bytes: 0\n",
    )
    registry = CollectorRegistry()
    registry.register(ProcessResourcesCollector(tmp_path, proc, tmp_path / "no-cgroup"))
    found = _samples(registry)
    assert found["process_io_read_bytes_total"] == 4096
    assert found["process_io_write_bytes_total"] == 8192
    assert found["process_io_read_chars_total"] == 100
    assert found["process_io_write_chars_total"] == 200


def test_a_hidden_proc_self_io_leaves_the_io_series_out_and_the_rest_in(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    registry = CollectorRegistry()
    registry.register(ProcessResourcesCollector(tmp_path, proc, tmp_path / "no-cgroup"))
    found = _samples(registry)
    assert not any(name.startswith("process_io_") for name in found)
    assert found["zhongshu_process_cpu_limit_cores"] == len(os.sched_getaffinity(0))
    assert "zhongshu_process_memory_limit_bytes" not in found  # no meminfo, no cgroup


def test_the_cgroup_v2_limits_bound_cpu_and_memory(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc", "read_bytes: 1\nwrite_bytes: 2\n", mem_kib=4 * 1024**2)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("50000 100000\n")
    (cgroup / "memory.max").write_text(f"{512 * 1024**2}\n")
    assert procmetrics.cpu_limit_cores(cgroup) == min(0.5, len(os.sched_getaffinity(0)))
    assert procmetrics.memory_limit_bytes(cgroup, proc) == 512 * 1024**2
    # Unlimited: the machine's.
    (cgroup / "cpu.max").write_text("max 100000\n")
    (cgroup / "memory.max").write_text("max\n")
    assert procmetrics.cpu_limit_cores(cgroup) == len(os.sched_getaffinity(0))
    assert procmetrics.memory_limit_bytes(cgroup, proc) == 4 * 1024**3


def test_the_cgroup_v1_limits_are_read_and_capped_at_the_machine(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc", "", mem_kib=1024**2)
    cgroup = tmp_path / "cgroup"
    (cgroup / "cpu").mkdir(parents=True)
    (cgroup / "memory").mkdir()
    (cgroup / "cpu" / "cpu.cfs_quota_us").write_text("25000\n")
    (cgroup / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (cgroup / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert procmetrics.cpu_limit_cores(cgroup) == 0.25
    assert procmetrics.memory_limit_bytes(cgroup, proc) == 1024**3


def test_the_data_directorys_filesystem_is_measured(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    registry = CollectorRegistry()
    registry.register(ProcessResourcesCollector(tmp_path / "data"))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [size] = families["zhongshu_filesystem_size_bytes"].samples
    [avail] = families["zhongshu_filesystem_avail_bytes"].samples
    assert size.labels == {"path": str(tmp_path / "data")}
    assert 0 <= avail.value <= size.value
    assert size.value > 0


def test_this_process_reports_real_io_once_registered_twice() -> None:
    registry = CollectorRegistry()
    procmetrics.register(registry)
    procmetrics.register(registry)  # a second side port in the same process: no duplicate
    found = _samples(registry)
    if Path("/proc/self/io").exists():
        assert found["process_io_write_chars_total"] > 0
    assert found["zhongshu_process_cpu_limit_cores"] > 0
