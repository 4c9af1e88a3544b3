"""``zhongshu status``: what the bus holds (streams, their consumers' backlog) and, when
``zhongshu up`` runs in the data dir, whether each of its services answers ``/readyz``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
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
    durable: bool = True


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
                    durable=bool(c.config.durable_name),
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


# Everything below fits an 80-column terminal: streams and their consumers are two tables of
# five or six columns, a KV bucket's watchers (ephemeral consumers with random names) are one
# row, and a service shows its health port and uptime instead of a URL and a timestamp.
WATCHERS = "watchers"


@dataclass
class ConsumerRow:
    label: str
    count: int
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int


def consumer_rows(consumers: list[ConsumerStatus]) -> list[ConsumerRow]:
    """One row per durable consumer; ephemeral ones (KV watchers, named by the server with eight
    random characters) summed into one row, since their names mean nothing to a reader."""
    rows: list[ConsumerRow] = []
    watchers = ConsumerRow(WATCHERS, 0, 0, 0, 0, 0)
    for c in consumers:
        if not c.durable:
            watchers.count += 1
            watchers.pending += c.pending
            watchers.ack_pending += c.ack_pending
            watchers.redelivered += c.redelivered
            watchers.waiting += c.waiting
            continue
        rows.append(ConsumerRow(c.name, 1, c.pending, c.ack_pending, c.redelivered, c.waiting))
    if watchers.count:
        watchers.label = f"{watchers.count} {WATCHERS}"
        rows.append(watchers)
    return rows


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)


def streams_table(streams: list[StreamStatus]) -> Table:
    table = _table("streams")
    table.add_column("stream", no_wrap=True)
    for col in ("messages", "bytes", "first seq", "last seq", "consumers"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in streams:
        table.add_row(
            f"[bold]{escape(s.name)}[/]",
            str(s.messages),
            _size(s.bytes),
            str(s.first_seq),
            str(s.last_seq),
            str(len(s.consumers)),
        )
    return table


def consumers_table(streams: list[StreamStatus]) -> Table:
    table = _table("consumers")
    table.add_column("stream / consumer", no_wrap=True)
    for col in ("pending", "ack pending", "redelivered", "waiting"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in streams:
        rows = consumer_rows(s.consumers)
        if not rows:
            continue
        table.add_row(f"[bold]{escape(s.name)}[/]")
        for row in rows:
            table.add_row(
                f"  {escape(row.label)}",
                f"[yellow]{row.pending}[/]" if row.pending else "0",
                str(row.ack_pending),
                f"[red]{row.redelivered}[/]" if row.redelivered else "0",
                str(row.waiting),
            )
    return table


def uptime(started_at: str | None, now: datetime | None = None) -> str:
    """`3d4h`, `2h05m`, `4m09s` or `12s` since an ISO timestamp; `-` when unknown."""
    if not started_at:
        return "-"
    try:
        began = datetime.fromisoformat(started_at)
    except ValueError:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - began).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def services_table(services: list[ServiceStatus], now: datetime | None = None) -> Table:
    table = _table(f"services (health on http://{runstate.HEALTH_HOST}:<port>)")
    table.add_column("service", no_wrap=True)
    for col in ("pid", "port", "restarts", "up"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("readyz", overflow="fold")
    for s in services:
        state = f"[green]{escape(s.detail)}[/]" if s.ready else f"[red]{escape(s.detail)}[/]"
        table.add_row(
            s.name,
            str(s.pid or "-"),
            str(s.health_port),
            str(s.restarts),
            uptime(s.started_at, now) if s.pid else "-",
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
            console.print(consumers_table(status.streams))
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
