"""What a running ``zhongshu up`` leaves in ``<data-dir>/run/services.json`` for the other verbs:
its services (pid, health port, restarts) and, when the NATS server is its own embedded one, its
URL, so ``zhongshu status`` and ``zhongshu dlq`` find the bus without being told."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("data")
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# The services' ZHONGSHU_NATS_URL (`ServiceSettings.nats_url`), as `zhongshu.devstack` names it;
# spelled out here because a service image has the CLI without the embedded stack.
NATS_URL_ENV = "ZHONGSHU_NATS_URL"
HEALTH_HOST = "127.0.0.1"


def services_path(data_dir: Path) -> Path:
    return data_dir / "run" / "services.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ServiceRecord:
    name: str
    pid: int | None
    health_port: int
    restarts: int = 0
    started_at: str | None = None
    ready: bool = False

    @property
    def health_url(self) -> str:
        return f"http://{HEALTH_HOST}:{self.health_port}"


@dataclass
class RunState:
    supervisor_pid: int
    # Only the embedded server's URL (no credentials in it); a URL given by the operator
    # through the environment stays there.
    nats_url: str | None = None
    services: list[ServiceRecord] = field(default_factory=list)
    updated_at: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunState:
        return cls(
            supervisor_pid=int(raw["supervisor_pid"]),
            nats_url=raw.get("nats_url"),
            services=[ServiceRecord(**s) for s in raw.get("services", [])],
            updated_at=str(raw.get("updated_at", "")),
        )


def write(path: Path, state: RunState) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state.updated_at = now_iso()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    tmp.replace(path)


def read(path: Path) -> RunState | None:
    """The state left by ``zhongshu up``, or None when there is none (or it is unreadable)."""
    try:
        return RunState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_nats_url(data_dir: Path) -> str:
    """``ZHONGSHU_NATS_URL``, else the embedded server of a running ``zhongshu up`` in
    `data_dir`, else the default local server."""
    if url := os.environ.get(NATS_URL_ENV):
        return url
    state = read(services_path(data_dir))
    if state is not None and state.nats_url and pid_alive(state.supervisor_pid):
        return state.nats_url
    return DEFAULT_NATS_URL
