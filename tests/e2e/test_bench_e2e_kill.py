"""bench/e2e.py's quick mode with the notifier and the router killed (SIGKILL) 40 % into each
phase's sends, `/help` and free text with streamed cards: `zhongshu up` restarts them, their
unacked messages come back, and every event the platform delivered is answered exactly once at
the fake platform. Counts only, no wall-clock threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("feishu.help.throughput", "feishu.chat.throughput")
KILLED = ("notifier", "router")


def test_killing_the_notifier_and_the_router_mid_run_loses_and_repeats_nothing() -> None:
    command = [sys.executable, str(ROOT / "bench" / "e2e.py"), "--quick"]
    for phase in PHASES:
        command += ["--only", phase]
    command += ["--seconds", "6", "--chat-seconds", "5", "--kill", ",".join(KILLED)]
    command += ["--deadline", "540"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {row["bench"]: row for row in map(json.loads, done.stdout.splitlines())}
    for phase in PHASES:
        row = lines[f"p3.e2e.{phase}"]
        assert all(row["killed"].get(name) for name in KILLED), row["killed"]
        assert set(KILLED) <= set(lines[f"p3.e2e.{phase}.cpu_ms_per_event"]["restarted"])
        assert row["answered"] > 0
        assert row["sent"] == row["answered"] + row["not_accepted"]
        assert (row["lost"], row["duplicates"], row["first_only"]) == (0, 0, 0), row
