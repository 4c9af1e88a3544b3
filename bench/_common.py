"""Shared helpers for the benchmarks in ``bench/``: a nats-server of the bench's own (127.0.0.1,
a temporary directory), role processes with hard deadlines, statistics and the JSON figure lines.

Every figure is one line on stdout::

    {"bench": ..., "value": ..., "unit": ..., "baseline": ..., "ratio": ..., ...extra}

Progress and diagnostics go to stderr, so ``bench/run_all.py > results.jsonl`` keeps only figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from zhongshu.devstack import NatsServer

HERE = Path(__file__).resolve().parent
LOCALHOST = "127.0.0.1"
SYNC_MODES = ("always", "default")
"""``always``: nats-server fsyncs every JetStream write before its PubAck (our durable default).
``default``: nats-server's own 2-minute ``sync_interval``."""


# ---------------------------------------------------------------- output


def log(message: str) -> None:
    """Progress for the human watching (stderr; stdout holds only figure lines)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 3) if abs(value) < 100 else round(value, 1)
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def figure(
    bench: str, value: float, unit: str, baseline: float, ratio: float, **extra: Any
) -> dict[str, Any]:
    """Print one figure line (the format every benchmark of the project shares) and return it."""
    row: dict[str, Any] = {
        "bench": bench,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        **extra,
    }
    row = _round(row)
    print(json.dumps(row), flush=True)
    return row


def safe_ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


# ---------------------------------------------------------------- statistics


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- time and CPU


class Deadline:
    """A hard wall-clock bound."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, what: str) -> None:
        if self.expired():
            raise TimeoutError(f"bench deadline of {self.seconds:.0f}s passed before {what}")


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used."""
    t = os.times()
    return t.user + t.system


def proc_cpu_seconds(pid: int | None) -> float:
    """CPU seconds another process has used (Linux ``/proc``); NaN if unknown."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def tree_cpu_seconds(root: int | None) -> float:
    """CPU seconds used so far by a process and all its live descendants (Linux ``/proc``);
    NaN if unknown. For servers that may fork workers (uvicorn, granian)."""
    if root is None:
        return float("nan")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    if root not in cpu:
        return float("nan")
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    return sum(cpu.get(p, 0.0) for p in tree)


# ---------------------------------------------------------------- processes


def child_env() -> dict[str, str]:
    """The environment of role processes: no OTLP exporter or service settings from the caller's
    shell (a bench sends traffic only to its own 127.0.0.1 server), unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ZHONGSHU_", "NATS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the bench process dies (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One role process (``python bench/<script> <role> ...``). A thread reads its stdout and keeps
    the ``READY`` marker and JSON result lines; stderr goes to a log file shown on failure."""

    registry: list[Child] = []  # noqa: RUF012 - every child of this process, for cleanup

    def __init__(self, script: str, args: Sequence[str], *, log_dir: Path, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.stderr"
        self._stderr = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), *args],
            cwd=HERE.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(),
            text=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self._ready = threading.Event()
        self._result = threading.Event()
        self.results: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._drain, name=f"read:{name}", daemon=True)
        self._reader.start()
        Child.registry.append(self)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY"):
                self._ready.set()
            elif line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.results.append(json.loads(line))
                    self._result.set()
        self._ready.set()  # EOF: the process ended; waiters check why
        self._result.set()

    def stderr_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def _failure(self, what: str) -> RuntimeError:
        code = self.proc.poll()
        return RuntimeError(
            f"{self.name}: {what} (exit code {code})\n--- stderr tail ---\n{self.stderr_tail()}"
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise self._failure(f"not ready within {timeout:.0f}s")

    def result(self, timeout: float) -> dict[str, Any]:
        """The role's JSON result line (waits up to ``timeout``), then its exit (killed if it does
        not exit on its own within a few seconds)."""
        got = self._result.wait(timeout)
        try:
            self.proc.wait(10 if got else 1)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not exit after its result; killing it")
        self.kill()
        self._reader.join(5)
        if not self.results:
            raise self._failure(f"no result within {timeout:.0f}s")
        if self.proc.returncode not in (0, -signal.SIGKILL, None):
            log(f"{self.name} exited with {self.proc.returncode}:\n{self.stderr_tail()}")
        return self.results[-1]

    def kill(self) -> None:
        """SIGKILL this child (ours, by its handle) if it still runs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        with contextlib.suppress(OSError):
            self._stderr.close()

    @classmethod
    def kill_all(cls) -> None:
        for child in cls.registry:
            child.kill()
        cls.registry.clear()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so ``finally`` blocks stop our children and server."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def bench_server(sync: str, *, name: str) -> Iterator[tuple[NatsServer, Path]]:
    """A nats-server of this bench alone, on 127.0.0.1 in a temporary directory that is removed
    afterwards, with the JetStream sync mode ``sync`` (see :data:`SYNC_MODES`). Yields the server
    and a directory for the run's scratch files (role logs, latency samples)."""
    if sync not in SYNC_MODES:
        raise ValueError(f"unknown sync mode {sync!r}; use one of {SYNC_MODES}")
    with tempfile.TemporaryDirectory(prefix=f"zhongshu-bench-{name}-") as tmp:
        root = Path(tmp)
        scratch = root / "scratch"
        scratch.mkdir()
        server = NatsServer(
            root / "nats", sync_always=(sync == "always"), log_path=root / "logs" / "nats.log"
        )
        server.start()
        try:
            if not server.url.startswith(f"nats://{LOCALHOST}:"):
                raise RuntimeError(f"bench server is not on {LOCALHOST}: {server.url}")
            yield server, scratch
        finally:
            Child.kill_all()
            server.stop()


def col(rows: list[dict[str, Any]], key: str) -> list[Any]:
    """One figure from every run's row."""
    return [row[key] for row in rows]


async def send_json(send: Any, status: int, body: bytes) -> None:
    """One whole JSON answer from a bare ASGI app (the raw baselines' handlers)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve_on_a_kernel_port(app: Any, *, http: str = "httptools") -> None:
    """uvicorn, one worker, on a port the kernel picks (so no other process on this shared box
    can take it first), told on stdout as ``{"port": N}``."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=http,
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])


class NatsLifespanApp:
    """A raw baseline's bare ASGI app: its NATS connection opens at lifespan startup (before the
    port listens) and closes at shutdown; subclasses answer requests with ``self.js``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.js: Any = None
        self.nc: Any = None

    async def _lifespan(self, receive: Any, send: Any) -> None:
        import contextlib

        import nats

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.nc = await nats.connect(self.url, name="bench-raw-ingress")
                self.js = self.nc.jetstream()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.nc.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
