"""PostgreSQL, the binaries of the ``pgserver`` wheel, run by us on TCP (``pgserver`` itself only
offers unix sockets). PostgreSQL refuses to run as root, so as root it runs as the system user
``pgserver``, the way ``pgserver`` does it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any

from zhongshu.devstack.process import HOST, Server, StackError, tcp_accepts

__all__ = ["PG_SYSTEM_USER", "PostgresServer"]

PG_SYSTEM_USER = "pgserver"

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
        if not tcp_accepts(self.port):
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
