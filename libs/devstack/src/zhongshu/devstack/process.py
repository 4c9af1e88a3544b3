"""What every server of the embedded stack shares: free ports, one spawner thread whose children
die with this process, and :class:`Server`, a process started on free ports, stopped gracefully,
killable and restartable.

Servers are started in their own session (Ctrl-C in a terminal does not reach them, so the caller
decides the stop order) and die with the Python process if it is killed (``PR_SET_PDEATHSIG`` on
Linux). The code is synchronous: it is used from sync pytest session fixtures and from the CLI.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import fcntl
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "HOST",
    "LOG_TAIL_LINES",
    "Managed",
    "Server",
    "StackError",
    "free_port",
    "free_ports",
    "port_in_use",
    "tcp_accepts",
]

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A server of the embedded stack could not be started (the message says which and why)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
        return False


def tcp_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- process spawning -------------------------------------------------------------------------
#
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. The
# servers are started from short-lived worker threads (in parallel), so every long-running server
# is forked by one daemon thread that lives as long as the process.


class _Spawner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()

    def popen(self, make: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="zhongshu-stack-spawner", daemon=True
                )
                self._thread.start()
            if threading.current_thread() is self._thread:  # pragma: no cover - not reentrant
                return make()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((make, future))
        return future.result()

    def _run(self) -> None:
        while True:
            make, future = self._jobs.get()
            try:
                future.set_result(make())
            except BaseException as exc:
                future.set_exception(exc)


_spawner = _Spawner()


def _death_signal_preexec(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get `sig` when this process dies (Linux only).

    It runs in the child after ``setsid`` and after the uid/gid switch of ``Popen(user=...)``:
    a credential change clears the death signal, so it must be set after it, which is the order
    CPython's ``_posixsubprocess`` uses.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# --- servers --------------------------------------------------------------------------------


class Managed(abc.ABC):
    """Something started and stopped; ``with`` starts it and stops it."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start; return self."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop. Idempotent."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Server(Managed):
    """One server process: started on free ports, stopped gracefully, killable and restartable.

    `data_dir` is this server's own directory; its log goes to `log_path`, by default
    ``data_dir.parent / "logs" / f"{name}.log"`` (the layout of :class:`EmbeddedStack`). A port
    chosen here (``port=None``) is kept across :meth:`restart`.
    """

    name: ClassVar[str] = "server"
    #: what the server gets when the Python process dies
    death_signal: ClassVar[int] = signal.SIGTERM
    #: the graceful stop signal
    stop_signal: ClassVar[int] = signal.SIGTERM
    #: sent when the graceful stop times out, before SIGKILL
    escalation_signal: ClassVar[int | None] = None
    #: how long to wait for a data dir locked by another server (one of a killed parent may be
    #: exiting)
    lock_wait: ClassVar[float] = 3.0

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.log_path = (
            Path(log_path).absolute()
            if log_path is not None
            else self.data_dir.parent / "logs" / f"{self.name}.log"
        )
        self.startup_timeout = startup_timeout
        self._port = port
        self._port_given = port is not None
        self._ports_chosen = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._log_offset = 0
        self._lock = threading.RLock()

    # public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise StackError(f"{self.name}: no port yet, call start() first")
        return self._port

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The client URL of the running server."""

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> Self:
        """Start the server and return once it answers; raise :class:`StackError` otherwise."""
        with self._lock:
            if self.running:
                return self
            self._reap()
            self._mark_log()
            self._make_dirs()
            fresh = not self._ports_chosen
            attempts = 3 if fresh else 1  # a restart keeps its ports
            for attempt in range(attempts):
                if fresh:
                    self._choose_ports()
                    self._ports_chosen = True
                try:
                    self._start_once()
                    return self
                except StackError:
                    self._force_kill()
                    self._reap()
                    # a port picked here may have been taken by someone else meanwhile: retry
                    if attempt + 1 < attempts and self._picked_ports_taken():
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully; after `timeout` seconds escalate, then kill. Idempotent, never hangs."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                signals = [self.stop_signal]
                if self.escalation_signal is not None:
                    signals.append(self.escalation_signal)
                for i, sig in enumerate(signals):
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
                    try:
                        proc.wait(timeout if i == 0 else 5.0)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                self._force_kill()
            self._reap()

    def kill(self) -> None:
        """SIGKILL the server and everything it started (for fault tests); data stays."""
        with self._lock:
            self._force_kill()
            self._reap()

    def restart(self) -> Self:
        """Stop (if running) and start again on the same ports with the same data."""
        with self._lock:
            self.stop()
            return self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines this server logged since its last start."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "-"
        return f"<{type(self).__name__} port={port} pid={self.pid} data_dir={self.data_dir}>"

    # for subclasses ----------------------------------------------------------------------------

    @abc.abstractmethod
    def _binary(self) -> Path:
        """The server's executable."""

    @abc.abstractmethod
    def _command(self, binary: Path) -> list[str]:
        """The server's command line."""

    def _prepare(self) -> None:
        """Before each start: write config, initialise data."""

    @abc.abstractmethod
    def _is_ready(self) -> bool:
        """Whether the started server answers."""

    def _after_ready(self) -> None:
        """After each start, once ready."""

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def _lock_file(self) -> Path | None:
        """The file locked while the server runs (None: the server locks its data itself)."""
        return self.data_dir / ".zhongshu.lock"

    # internals ---------------------------------------------------------------------------

    def _error(self, message: str) -> StackError:
        """A :class:`StackError` naming this server, its port, data dir and log tail."""
        where = f"port {self._port}, " if self._port is not None else ""
        text = f"{self.name}: {message} ({where}data dir {self.data_dir})"
        tail = self.log_tail()
        if tail:
            text += f"\n--- last lines of {self.log_path} ---\n{tail}"
        return StackError(text)

    def _make_dirs(self) -> None:
        for d in (self.data_dir, self.log_path.parent):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error(f"cannot create directory {d}: {exc}") from exc
            if not os.access(d, os.W_OK | os.X_OK):
                raise self._error(f"directory {d} is not writable")

    def _choose_ports(self) -> None:
        """Pick the ports that were not given."""
        if not self._port_given:
            self._port = free_port()

    def _picked_ports_taken(self) -> bool:
        return not self._port_given and port_in_use(self.port)

    def _mark_log(self) -> None:
        """Make :meth:`log_tail` show only what is logged from now on."""
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0

    def _start_once(self) -> None:
        self._mark_log()
        self._lock_data_dir()
        self._prepare()
        binary = self._binary()
        command = self._command(binary)
        try:
            with self.log_path.open("ab") as log:
                log.write(f"--- zhongshu: starting {shlex.join(command)}\n".encode())
                log.flush()
                self._proc = _spawner.popen(
                    lambda: subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=self.data_dir,
                        start_new_session=True,
                        pass_fds=() if self._lock_fd is None else (self._lock_fd,),
                        preexec_fn=_death_signal_preexec(self.death_signal),
                        **self._popen_kwargs(),
                    )
                )
        except OSError as exc:
            raise self._error(f"cannot run {binary}: {exc}") from exc
        self._wait_ready()
        self._after_ready()

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.01
        while True:
            code = proc.poll()
            if code is not None:
                raise self._error(f"exited with code {code} during startup")
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise self._error(f"not ready after {self.startup_timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def _force_kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # the server leads its own session and process group (start_new_session=True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def _reap(self) -> None:
        """Forget the process once it has exited, and release the data dir."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return
        self._proc = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock_data_dir(self) -> None:
        """Hold an exclusive flock on the data dir; the server inherits it (it lasts as long as
        the server does, even past this process)."""
        path = self._lock_file
        if path is None or self._lock_fd is not None:
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._error(f"cannot create lock file {path}: {exc}") from exc
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise self._error(
                        f"data dir is in use by another server (lock {path} is held)"
                    ) from exc
                time.sleep(0.05)
        self._lock_fd = fd
