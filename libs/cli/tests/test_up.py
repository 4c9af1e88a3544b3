"""``zhongshu up`` as a user runs it: a subprocess that brings up the embedded stack and the
router (and every other service), answers /readyz, and stops everything on Ctrl-C (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proctree import alive, descendants, kill_tree
from zhongshu.cli import runstate
from zhongshu.devstack import free_port

READY_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 60.0

pytestmark = pytest.mark.slow


HTTP_PORT = free_port()


@pytest.fixture
def up(server_dir: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
    env["COLUMNS"] = "200"
    env["ZHONGSHU_HTTP_PORT"] = str(HTTP_PORT)
    data_dir, ready = server_dir / "data", server_dir / "ready"
    command = [sys.executable, "-m", "zhongshu.cli", "up"]
    command += ["--data-dir", str(data_dir), "--ready-file", str(ready)]
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, data_dir, ready
    finally:
        kill_tree(proc)


def wait_for_restart(data_dir: Path, old_pid: int) -> runstate.ServiceRecord:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        state = runstate.read(runstate.services_path(data_dir))
        if state is not None:
            [router] = [s for s in state.services if s.name == "router"]
            if router.ready and router.pid not in (None, old_pid):
                return router
        time.sleep(0.1)
    pytest.fail("the router was not restarted")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_serves_the_router_and_a_stop_signal_stops_everything(
    up: tuple[subprocess.Popen[str], Path, Path], stop_signal: signal.Signals
) -> None:
    proc, data_dir, ready = up
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"zhongshu up exited with {proc.returncode}:\n{proc.communicate()[0]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"not ready after {READY_TIMEOUT_S:.0f}s:\n{proc.communicate()[0]}")
        time.sleep(0.1)

    state = runstate.read(runstate.services_path(data_dir))
    assert state is not None
    assert state.supervisor_pid == proc.pid
    [router] = [s for s in state.services if s.name == "router"]
    assert router.pid is not None
    response = httpx.get(f"{router.health_url}/readyz", timeout=2.0)
    assert response.status_code == 200, response.text
    assert response.json()["ready"] is True
    front = httpx.get(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=2.0)
    assert front.status_code == 200
    assert "router" in front.json()["services"]

    if stop_signal == signal.SIGINT:  # once is enough: a crashed service comes back
        os.kill(router.pid, signal.SIGKILL)
        restarted = wait_for_restart(data_dir, router.pid)
        assert restarted.restarts == 1
        assert httpx.get(f"{restarted.health_url}/readyz", timeout=2.0).status_code == 200
        router = restarted

    spawned = descendants(proc.pid)
    assert router.pid in spawned
    assert len(spawned) >= 4  # services, nats-server, postgres (and its workers), redis-server

    proc.send_signal(stop_signal)
    output, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    assert proc.returncode == 0, output
    assert "zhongshu is up" in output
    assert "router stopped (exit code 0)" in output
    assert "Traceback" not in output

    deadline = time.monotonic() + 5.0
    while (left := [pid for pid in spawned if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"still running after zhongshu up exited: {left}"
    assert not ready.exists()
    assert not runstate.services_path(data_dir).exists()
