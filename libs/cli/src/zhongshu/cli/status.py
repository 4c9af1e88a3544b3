"""``zhongshu status``: what the bus holds (streams, their consumers' backlog) and, when
``zhongshu up`` runs in the data dir, whether each of its services answers ``/readyz``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from zhongshu.cli import runstate
from zhongshu.cli.console import CliError, console
from zhongshu.cli.provision_cmd import CLIENT_NAME
from zhongshu.runtime import bus
from zhongshu.runtime.errors import BusUnavailable

CONNECT_TIMEOUT_S = 3.0
HEALTH_TIMEOUT_S = 1.0


@dataclass
class ConsumerStatus:
    name: str
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int


@dataclass
class StreamStatus:
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: list[ConsumerStatus] = field(default_factory=list)


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    health_port: int
    restarts: int
    started_at: str | None
    ready: bool
    detail: str


@dataclass
class Status:
    nats_url: str
    bus_error: str | None = None
    streams: list[StreamStatus] = field(default_factory=list)
    services: list[ServiceStatus] | None = None  # None: no `zhongshu up` running here

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _streams(url: str) -> list[StreamStatus]:
    nc = await bus.connect(url, name=CLIENT_NAME, timeout_s=CONNECT_TIMEOUT_S)
    try:
        js = bus.jetstream(nc)
        result = []
        for info in sorted(await js.streams_info(), key=lambda i: i.config.name or ""):
            name = info.config.name or "?"
            consumers = [
                ConsumerStatus(
                    name=c.name,
                    pending=c.num_pending or 0,
                    ack_pending=c.num_ack_pending or 0,
                    redelivered=c.num_redelivered or 0,
                    waiting=c.num_waiting or 0,
                )
                for c in sorted(await js.consumers_info(name), key=lambda c: c.name)
            ]
            state = info.state
            result.append(
                StreamStatus(
                    name=name,
                    messages=state.messages,
                    bytes=state.bytes,
                    first_seq=state.first_seq,
                    last_seq=state.last_seq,
                    consumers=consumers,
                )
            )
        return result
    finally:
        await nc.close()


def _failing_checks(response: httpx.Response) -> str:
    try:
        checks = response.json().get("checks", {})
        failing = [name for name, ok in checks.items() if not ok]
    except (ValueError, AttributeError):
        failing = []
    return ", ".join(failing) or f"HTTP {response.status_code}"


async def _service_health(http: httpx.AsyncClient, record: runstate.ServiceRecord) -> ServiceStatus:
    ready, detail = False, ""
    if record.pid is None:
        detail = "not running (restarting)"
    else:
        try:
            response = await http.get(f"{record.health_url}/readyz")
        except httpx.HTTPError as exc:
            detail = f"unreachable ({type(exc).__name__})"
        else:
            ready = response.status_code == 200
            detail = "ready" if ready else f"not ready: {_failing_checks(response)}"
    return ServiceStatus(
        name=record.name,
        pid=record.pid,
        health_port=record.health_port,
        restarts=record.restarts,
        started_at=record.started_at,
        ready=ready,
        detail=detail,
    )


async def collect(url: str, data_dir: Path) -> Status:
    status = Status(nats_url=bus.redact_url(url))
    try:
        status.streams = await _streams(url)
    except BusUnavailable as exc:
        status.bus_error = str(exc)
    state = runstate.read(runstate.services_path(data_dir))
    if state is not None and runstate.pid_alive(state.supervisor_pid):
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
            status.services = list(
                await asyncio.gather(*(_service_health(http, r) for r in state.services))
            )
    return status


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def streams_table(streams: list[StreamStatus]) -> Table:
    table = Table(title="streams", title_justify="left", box=None, header_style="bold")
    for col in ("stream / consumer", "messages", "bytes", "first seq", "last seq"):
        table.add_column(col, justify="left" if col.startswith("stream") else "right")
    for col in ("pending", "ack pending", "redelivered", "waiting"):
        table.add_column(col, justify="right")
    for s in streams:
        table.add_row(
            f"[bold]{escape(s.name)}[/]",
            str(s.messages),
            _size(s.bytes),
            str(s.first_seq),
            str(s.last_seq),
        )
        for c in s.consumers:
            pending = f"[yellow]{c.pending}[/]" if c.pending else "0"
            table.add_row(
                f"  └ {escape(c.name)}",
                *("", "", "", ""),
                pending,
                str(c.ack_pending),
                f"[red]{c.redelivered}[/]" if c.redelivered else "0",
                str(c.waiting),
            )
    return table


def services_table(services: list[ServiceStatus]) -> Table:
    table = Table(title="services", title_justify="left", box=None, header_style="bold")
    for col in ("service", "pid", "health", "restarts", "started", "readyz"):
        table.add_column(col)
    for s in services:
        state = f"[green]{escape(s.detail)}[/]" if s.ready else f"[red]{escape(s.detail)}[/]"
        table.add_row(
            s.name,
            str(s.pid or "-"),
            f"http://{runstate.HEALTH_HOST}:{s.health_port}",
            str(s.restarts),
            s.started_at or "-",
            state,
        )
    return table


def run(url: str, data_dir: Path, *, as_json: bool) -> None:
    status = asyncio.run(collect(url, data_dir))
    if as_json:
        typer.echo(json.dumps(status.to_json(), indent=2))
    else:
        console.print(f"NATS {escape(status.nats_url)}")
        if status.streams:
            console.print(streams_table(status.streams))
        elif status.bus_error is None:
            console.print("[dim]no streams: run `zhongshu provision`[/]")
        if status.services is not None:
            console.print(services_table(status.services))
        else:
            console.print(f"[dim]no `zhongshu up` running for {escape(str(data_dir))}[/]")
    if status.bus_error is not None:
        raise CliError(status.bus_error)
    if status.services is not None and not all(s.ready for s in status.services):
        raise CliError("some services are not ready")
