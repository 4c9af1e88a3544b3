"""Runs services as child processes for ``zhongshu up``: prefixes and prettifies their output,
restarts a crashed child with exponential backoff, tracks readiness through each child's
``/readyz``, records the children in ``services.json`` and stops them gracefully (SIGTERM, then
SIGKILL after the drain timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.text import Text

from zhongshu.cli import runstate
from zhongshu.cli.runstate import RunState, ServiceRecord
from zhongshu.devstack import free_port

LogFormat = Literal["pretty", "json"]

HEALTH_PORT_ENV = "ZHONGSHU_HEALTH_PORT"

# A service drains for up to 30 s (its drain_timeout_s); leave it room to close before SIGKILL.
STOP_TIMEOUT_S = 35.0
READY_POLL_S = 0.1
LINE_LIMIT = 1024 * 1024  # a log line with a long stack trace must not break the reader
_PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")
_LEVEL_STYLE = {
    "DEBUG": "dim",
    "INFO": "green",
    "WARNING": "yellow",
    "WARN": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold red",
}


# --- restart policy (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Restart delays: 0.5 s after the first crash, doubling up to 30 s; a child that stayed up
    for 60 s counts as healthy again, so its next crash starts from 0.5 s."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    reset_after_s: float = 60.0

    def failures_after_exit(self, failures: int, uptime_s: float) -> int:
        """Consecutive failures once a child exits after `uptime_s` seconds."""
        return 1 if uptime_s >= self.reset_after_s else failures + 1

    def delay(self, failures: int) -> float:
        """Seconds to wait before restarting after `failures` consecutive failures (>= 1)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent: 2**1000 is fine for ints but overflows a float multiplication.
        return min(self.maximum_s, self.initial_s * 2.0 ** min(failures - 1, 64))


def restart_delay(failures: int, uptime_s: float, policy: Backoff = Backoff()) -> tuple[int, float]:
    """After a child that had `failures` consecutive failures exits after `uptime_s` seconds:
    (its new failure count, how long to wait before starting it again)."""
    count = policy.failures_after_exit(failures, uptime_s)
    return count, policy.delay(count)


# --- output (pure) -----------------------------------------------------------------------------


def _field(record: Mapping[str, Any], dotted: str) -> Any:
    """ECS fields appear both dotted (``log.level``) and nested (``error: {message}``)."""
    if dotted in record:
        return record[dotted]
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _clock(timestamp: Any) -> str:
    if not isinstance(timestamp, str):
        return datetime.now().strftime("%H:%M:%S")
    try:
        parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return parsed.astimezone().strftime("%H:%M:%S")


def pretty_ecs(line: str) -> list[Text] | None:
    """An ECS JSON log line as ``HH:MM:SS LEVEL message`` (plus an error's type, message and
    stack trace on the lines below); None when the line is not an ECS JSON record."""
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        record = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(record, dict) or ("message" not in record and "log.level" not in record):
        return None
    level = str(_field(record, "log.level") or "info").upper()
    head = Text.assemble(
        (_clock(record.get("@timestamp")), "dim"),
        " ",
        (f"{level:<5}", _LEVEL_STYLE.get(level, "")),
        " ",
        str(record.get("message", "")),
    )
    logger = _field(record, "log.logger")
    if logger:
        head.append(f"  ({logger})", style="dim")
    lines = [head]
    error_type, error_message = _field(record, "error.type"), _field(record, "error.message")
    if error_type or error_message:
        lines.append(Text(f"  {error_type or 'error'}: {error_message or ''}", style="red"))
    stack = _field(record, "error.stack_trace")
    if isinstance(stack, str):
        lines += [Text(f"  {s}", style="dim") for s in stack.rstrip().splitlines()]
    return lines


class LinePrinter:
    """Prints each child's lines behind a coloured, aligned ``name |`` prefix."""

    def __init__(self, console: Console, names: Sequence[str], log_format: LogFormat) -> None:
        self.console = console
        self.log_format = log_format
        self.width = max([len(n) for n in names] + [len("zhongshu")])
        self._colours = {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}

    def prefix(self, name: str) -> Text:
        return Text(f"{name:<{self.width}} | ", style=self._colours.get(name, "bold"))

    def child_line(self, name: str, raw: str) -> None:
        rendered = pretty_ecs(raw) if self.log_format == "pretty" else None
        for text in rendered or [Text(raw)]:
            self.console.print(self.prefix(name) + text, soft_wrap=True, highlight=False)

    def note(self, message: str, style: str = "") -> None:
        """A line from the supervisor itself."""
        line = Text(f"{'zhongshu':<{self.width}} | ", style="bold") + Text(message, style=style)
        self.console.print(line, soft_wrap=True, highlight=False)


# --- processes ---------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` so a child gets SIGTERM if this process is killed outright (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no prctl in libc
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class ChildSpec:
    """One service process; it gets ``ZHONGSHU_HEALTH_PORT`` added to `env` (`health_port`, or
    another free port if that one was taken while the child was down)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    health_port: int
    ready_path: str = "/readyz"
    """Polled on ``health_port`` until it answers 200."""
    fixed_port: bool = False
    """The port is in ``argv`` and others were told it (a model server): never move it."""


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    record: ServiceRecord
    proc: asyncio.subprocess.Process | None = None
    failures: int = 0
    started_mono: float = 0.0
    ever_ready: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    """Start every child, keep it running until :meth:`stop`, then stop them all."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        printer: LinePrinter,
        state: RunState,
        state_path: Path,
        on_all_ready: Callable[[], None] | None = None,
        on_port_moved: Callable[[str, int], Awaitable[None]] | None = None,
        backoff: Backoff = Backoff(),
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.printer = printer
        self.state = state
        self.state_path = state_path
        self.on_all_ready = on_all_ready
        # A restarted child whose port was taken gets another one; whoever routes to it (the
        # edge) is told here before the child starts.
        self.on_port_moved = on_port_moved
        self.backoff = backoff
        self.stop_timeout_s = stop_timeout_s
        self.children = [
            _Child(spec, ServiceRecord(name=spec.name, pid=None, health_port=spec.health_port))
            for spec in specs
        ]
        self.state.services = [c.record for c in self.children]
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._stop_requested_at = 0.0
        self._all_ready_announced = False
        self._http: httpx.AsyncClient | None = None

    async def run(self) -> None:
        """Supervise until :meth:`stop` is called; return once every child has exited."""
        self._save()
        async with httpx.AsyncClient(timeout=1.0) as http:
            self._http = http
            if not self.children and self.on_all_ready is not None:
                self.on_all_ready()
            watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
            for watcher in watchers:
                watcher.add_done_callback(self._watcher_done)
            await self._stopping.wait()
            await self._terminate_all()
            await asyncio.gather(*watchers, return_exceptions=True)
        self._http = None

    def stop(self) -> None:
        """Begin a graceful stop; a second call kills the children that are still draining.

        A second signal within a second of the first is the same request delivered twice (a
        terminal's Ctrl-C reaches the whole process group, and `uv run` forwards it too), not
        an impatient operator, so it does not escalate."""
        now = time.monotonic()
        if self._stopping.is_set():
            if now - self._stop_requested_at < 1.0:
                return
            if not self._force.is_set():
                self.printer.note("stopping now (SIGKILL)", "yellow")
                self._force.set()
            return
        self._stop_requested_at = now
        self._stopping.set()

    def _watcher_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.printer.note(f"supervision failed: {type(exc).__name__}: {exc}", "bold red")

    # ------------------------------------------------------------------ one child

    async def _watch(self, child: _Child) -> None:
        name = child.spec.name
        while not self._stopping.is_set():
            try:
                proc = await self._spawn(child)
            except OSError as exc:
                self.printer.note(f"cannot start {name}: {exc}", "red")
                rc: int | None = None
            else:
                if self._stopping.is_set():
                    self._signal(proc, signal.SIGTERM)
                rc = await proc.wait()
                await self._finish_tasks(child)
            child.record.pid = None
            child.record.ready = False
            self._save()
            if self._stopping.is_set():
                self.printer.note(f"{name} stopped ({_describe_exit(rc)})", "dim")
                return
            uptime = time.monotonic() - child.started_mono
            child.failures, delay = restart_delay(child.failures, uptime, self.backoff)
            self.printer.note(
                f"{name} exited ({_describe_exit(rc)}) after {uptime:.1f} s; "
                f"restarting in {delay:g} s",
                "red",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if not self._stopping.is_set():
                child.record.restarts += 1

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        child.started_mono = time.monotonic()
        if not child.spec.fixed_port and not _port_free(child.record.health_port):
            child.record.health_port = free_port()
            if self.on_port_moved is not None:
                try:
                    await self.on_port_moved(child.spec.name, child.record.health_port)
                except Exception as exc:
                    self.printer.note(f"could not re-route {child.spec.name}: {exc}", "red")
        proc = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            env={**child.spec.env, HEALTH_PORT_ENV: str(child.record.health_port)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own session: Ctrl-C in the terminal reaches only us, and we decide the order.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
            limit=LINE_LIMIT,
        )
        child.proc = proc
        child.record.pid = proc.pid
        child.record.started_at = runstate.now_iso()
        child.record.ready = False
        self._save()
        assert proc.stdout is not None
        assert proc.stderr is not None
        child.tasks = [
            asyncio.create_task(self._pump(child.spec.name, proc.stdout)),
            asyncio.create_task(self._pump(child.spec.name, proc.stderr)),
            asyncio.create_task(self._await_ready(child, proc)),
        ]
        return proc

    async def _pump(self, name: str, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: the reader dropped it
                self.printer.child_line(name, f"[a line longer than {LINE_LIMIT} bytes dropped]")
                continue
            if not raw:
                return
            self.printer.child_line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    async def _await_ready(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        assert self._http is not None
        url = f"{child.record.health_url}{child.spec.ready_path}"
        while True:
            if proc.returncode is not None or self._stopping.is_set():
                return
            with contextlib.suppress(httpx.HTTPError):
                if (await self._http.get(url)).status_code == 200:
                    break
            await asyncio.sleep(READY_POLL_S)
        child.record.ready = True
        self._save()
        if child.ever_ready:
            self.printer.note(f"{child.spec.name} is ready again", "green")
        child.ever_ready = True
        if not self._all_ready_announced and all(c.ever_ready for c in self.children):
            self._all_ready_announced = True
            if self.on_all_ready is not None:
                self.on_all_ready()

    async def _finish_tasks(self, child: _Child) -> None:
        tasks, child.tasks = child.tasks, []
        if not tasks:
            return
        tasks[-1].cancel()  # the readiness poll; the pumps end when the pipes close
        # A grandchild that inherited the pipes must not keep us waiting.
        _, late = await asyncio.wait(tasks, timeout=2.0)
        for task in late:
            task.cancel()

    # ------------------------------------------------------------------ stopping

    def _signal(self, proc: asyncio.subprocess.Process, sig: int, *, group: bool = False) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)  # the child leads its own process group
            else:
                os.kill(proc.pid, sig)

    async def _terminate_all(self) -> None:
        running = [
            c.proc for c in self.children if c.proc is not None and c.proc.returncode is None
        ]
        if not running:
            return
        self.printer.note(
            f"stopping {len(running)} service(s) (SIGTERM; they drain in-flight work, "
            f"up to {self.stop_timeout_s:g} s; Ctrl-C again to kill)",
            "yellow",
        )
        for proc in running:
            self._signal(proc, signal.SIGTERM)
        all_exited = asyncio.create_task(_wait_all(running))
        forced = asyncio.create_task(self._force.wait())
        await asyncio.wait(
            [all_exited, forced], timeout=self.stop_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        forced.cancel()
        if not all_exited.done():
            late = [p for p in running if p.returncode is None]
            if not self._force.is_set():
                self.printer.note(
                    f"{len(late)} service(s) still running after "
                    f"{self.stop_timeout_s:g} s: SIGKILL",
                    "red",
                )
            for proc in late:
                self._signal(proc, signal.SIGKILL, group=True)
            await all_exited

    def _save(self) -> None:
        with contextlib.suppress(OSError):
            runstate.write(self.state_path, self.state)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the health server binds
        try:
            s.bind((runstate.HEALTH_HOST, port))
        except OSError:
            return False
    return True


async def _wait_all(procs: Sequence[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        await proc.wait()


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "not started"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"
