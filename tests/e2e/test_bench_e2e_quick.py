"""bench/e2e.py (P3) in a short run: it starts the whole hub as `zhongshu up` does, drives it with
signed Feishu `/help` webhooks through Caddy, counts every answer at the fake platform, and
prints its figure lines with a raw baseline. No wall-clock threshold (benchmarks are not tests):
what is checked is that the bench works and that the hub lost and repeated nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_e2e_bench_measures_the_hub_against_raw_with_nothing_lost_or_repeated() -> None:
    command = [sys.executable, str(ROOT / "bench" / "e2e.py"), "--quick"]
    command += ["--only", "feishu.help.throughput", "--seconds", "3", "--deadline", "300"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=360, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {row["bench"]: row for row in map(json.loads, done.stdout.splitlines())}
    throughput = lines["p3.e2e.feishu.help.throughput"]
    assert throughput["answered"] > 0
    assert throughput["answered"] == throughput["sent"]
    assert (throughput["lost"], throughput["duplicates"]) == (0, 0)
    assert (throughput["baseline_lost"], throughput["baseline_duplicates"]) == (0, 0)
    assert throughput["value"] > 0
    assert throughput["baseline"] > 0
    cpu = lines["p3.e2e.feishu.help.throughput.cpu_ms_per_event"]
    assert {"notifier", "router", "ingress-feishu", "edge", "nats-server"} <= set(
        cpu["per_process"]
    )
    writes = lines["p3.e2e.feishu.help.throughput.js_writes_per_event"]
    assert writes["baseline"] == 1
    assert writes["per_stream"]["CHAT_INBOUND"] == 1  # one inbound write per event
    assert "p3.e2e.rss_mb" in lines
