"""``zhongshu up``: the embedded stack, provisioned, with every installed service supervised as a
child process, until Ctrl-C or SIGTERM stops it all in order (services drain, then the stack)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.markup import escape
from rich.table import Table

from zhongshu.cli import config_cmd, edge, localmodel, localsecrets, runstate, services
from zhongshu.cli.console import EXIT_USAGE, CliError, console, safe_url, uv_command
from zhongshu.cli.provision_cmd import outcomes_table, provision_url, refusal_message, summary
from zhongshu.cli.runstate import RunState
from zhongshu.cli.supervisor import ChildSpec, LinePrinter, LogFormat, Supervisor
from zhongshu.devstack import EmbeddedStack, free_port
from zhongshu.runtime.hubconfig import config_path, parse_config
from zhongshu.runtime.provision import refused

HTTP_PORT_ENV = edge.HTTP_PORT_ENV
OBJECT_STORE_ENV = "ZHONGSHU_OBJECT_STORE_URL"
WATCHDOG_DISKS_ENV = "ZHONGSHU_WATCHDOG_DISKS"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, kw_only=True)
class UpOptions:
    data_dir: Path
    only: list[str] | None = None
    no_services: bool = False
    log_format: LogFormat = "pretty"
    replicas: int = 1
    ready_file: Path | None = None
    local_model: Path | None = None
    public: edge.Public | None = None


def public_options(
    host: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    bind: str,
    acme_email: str | None,
) -> edge.Public | None:
    """The --public family of options, checked together."""
    if host is None:
        if tls_cert or tls_key:
            raise CliError("--tls-cert and --tls-key go with --public HOST", code=EXIT_USAGE)
        return None
    if (tls_cert is None) != (tls_key is None):
        raise CliError("give both --tls-cert and --tls-key, or neither", code=EXIT_USAGE)
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise CliError(f"{path} is not a readable file", code=EXIT_USAGE)
    return edge.Public(
        host=host,
        bind=bind,
        https_port=_port_env(edge.HTTPS_PORT_ENV, 443),
        redirect_port=_port_env(edge.REDIRECT_PORT_ENV, 80),
        tls_cert=tls_cert.absolute() if tls_cert else None,
        tls_key=tls_key.absolute() if tls_key else None,
        acme_email=acme_email,
    )


def _port_env(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise CliError(f"{name} must be a port number, got {raw!r}")
    return int(raw)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the synchronous steps run, SIGTERM (or a closed terminal's SIGHUP) behaves like
    Ctrl-C, so cleanup still happens."""
    previous = {s: signal.signal(s, _interrupt) for s in STOP_SIGNALS if s != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Cleanup is bounded (every stop has a timeout) and must not be cut short."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stack_description(stack: EmbeddedStack) -> str:
    parts = [s.name for s in stack.servers]
    return ", ".join(parts) if parts else "nothing (every dependency given by URL)"


def _child_specs(
    names: list[str], stack: EmbeddedStack, local_model: Path | None = None
) -> list[ChildSpec]:
    env = {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1"}
    # The cold archive lives with the rest of the hub's data unless an object store is given.
    env.setdefault(OBJECT_STORE_ENV, (stack.data_dir / "archive").absolute().as_uri())
    env.update(localsecrets.ensure(stack.data_dir, env))
    # The watchdog watches the disks of the data directory and of JetStream's store in it.
    data = stack.data_dir.absolute()
    env.setdefault(WATCHDOG_DISKS_ENV, f"{data},{data / 'nats'}")
    extra: list[ChildSpec] = []
    if local_model is not None:
        model_spec, pointers = localmodel.child_spec(local_model, env)
        env = {**env, **pointers}
        extra.append(model_spec)
    return [
        *extra,
        *(
            ChildSpec(
                name=name,
                argv=[sys.executable, "-m", "zhongshu.cli", "run", name],
                env=env,
                health_port=free_port(),
            )
            for name in names
        ),
    ]


def http_port() -> int:
    return _port_env(HTTP_PORT_ENV, edge.DEFAULT_PORT)


def urls_table(
    stack: EmbeddedStack,
    state: RunState,
    data_dir: Path,
    port: int,
    public: edge.Public | None = None,
) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("NATS", escape(safe_url(stack.nats_url)))
    grid.add_row("PostgreSQL", escape(safe_url(stack.postgres_url)))
    grid.add_row("Redis", escape(safe_url(stack.redis_url)))
    for record in state.services:
        if record.name != edge.NAME:
            grid.add_row(record.name, f"{record.health_url}/readyz")
    running = {r.name for r in state.services}
    origin = f"http://127.0.0.1:{port}"
    grid.add_row("HTTP", f"{origin} (Caddy; /healthz is the edge's)")
    if public is not None:
        suffix = "" if public.https_port == 443 else f":{public.https_port}"
        grid.add_row("HTTPS", f"https://{public.host}{suffix} (TLS 1.3, HSTS)")
    for prefix, name in edge.ROUTES:
        if name in running and prefix != "/":
            grid.add_row("", f"{origin}{prefix}… → {name}")
    if "gateway" in running:
        grid.add_row(
            "API token",
            f"[dim]{escape(uv_command())} run zhongshu token create --tenant <tenant> "
            "--scope tasks:write --scope tasks:read[/]",
        )
    else:
        grid.add_row("", "[dim]/api/… arrives with the gateway service[/]")
    grid.add_row("data", escape(f"{data_dir} (server logs in {data_dir / 'logs'})"))
    return grid


def run(options: UpOptions) -> None:
    began = time.monotonic()
    data_dir = options.data_dir.absolute()
    names = [] if options.no_services else services.select(options.only)
    state_path = runstate.services_path(data_dir)
    previous = runstate.read(state_path)
    if previous is not None and runstate.pid_alive(previous.supervisor_pid):
        raise CliError(
            f"zhongshu up is already running for {data_dir} (pid {previous.supervisor_pid}); "
            "stop it first or choose another --data-dir"
        )
    if options.ready_file is not None:
        options.ready_file.unlink(missing_ok=True)
    if options.local_model is not None:
        localmodel.check(options.local_model)

    stack = EmbeddedStack(data_dir)
    try:
        with _sigterm_interrupts():
            _start_and_supervise(stack, options, names, state_path, began)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
    finally:
        with _signals_ignored():
            if stack.servers:
                with console.status("stopping the embedded stack …"):
                    stack.stop()
            state_path.unlink(missing_ok=True)
            if options.ready_file is not None:
                options.ready_file.unlink(missing_ok=True)
    console.print("[green]✓[/] stopped")


def _start_and_supervise(
    stack: EmbeddedStack,
    options: UpOptions,
    names: list[str],
    state_path: Path,
    began: float,
) -> None:
    data_dir = stack.data_dir
    with console.status(f"starting {_stack_description(stack)} in {data_dir} …"):
        stack.start()
    console.print(
        f"[green]✓[/] stack up in {time.monotonic() - began:.1f} s "
        f"({escape(_stack_description(stack))})"
    )
    if stack.nats_url is None:  # pragma: no cover - the stack always has NATS here
        raise CliError("no NATS server: the stack was started without one")
    with console.status("provisioning streams and KV buckets …"):
        outcomes = asyncio.run(
            provision_url(stack.nats_url, replicas=options.replicas, allow_data_loss=False)
        )
    console.print(outcomes_table(outcomes))
    console.print(f"[green]✓[/] provisioned: {summary(outcomes)}")
    bad = refused(outcomes)
    if bad:
        raise CliError(refusal_message(bad))
    _seed_configuration(stack.nats_url)

    port = http_port()
    edge.check_port(port)
    specs = _child_specs(names, stack, options.local_model)
    upstreams = {spec.name: spec.health_port for spec in specs}
    front = edge.EdgeConfig(
        local_port=port, upstreams=upstreams, data_dir=data_dir, public=options.public
    )
    edge.write(front)
    specs.append(
        ChildSpec(
            name=edge.NAME,
            argv=edge.argv(front),
            env={**os.environ},
            health_port=port,
            ready_path="/healthz",
            fixed_port=True,
        )
    )
    state = RunState(
        supervisor_pid=os.getpid(),
        nats_url=stack.nats_url if stack.nats_server is not None else None,
    )
    printer = LinePrinter(console, [spec.name for spec in specs], options.log_format)

    def announce() -> None:
        console.print()
        console.print(
            f"[bold green]zhongshu is up[/] in {time.monotonic() - began:.1f} s "
            f"({len(names)} service(s))"
        )
        console.print(urls_table(stack, state, data_dir, port, options.public))
        console.print("[dim]Ctrl-C stops everything.[/]")
        console.print()
        if options.ready_file is not None:
            options.ready_file.parent.mkdir(parents=True, exist_ok=True)
            options.ready_file.touch()

    async def reroute(name: str, new_port: int) -> None:
        upstreams[name] = new_port
        await edge.reload(front)

    asyncio.run(_supervise(specs, printer, state, state_path, announce, reroute))


def _seed_configuration(nats_url: str) -> None:
    """Load zhongshu.yaml (if there is one) into the `config` bucket the services watch."""
    path = config_path()
    if not path.exists():
        console.print(f"[dim]no {escape(str(path))}: no apps configured yet[/]")
        return
    text = config_cmd.read(path)
    config = parse_config(text, source=str(path))
    revision = asyncio.run(config_cmd.push_text(nats_url, text, str(path)))
    console.print(
        f"[green]✓[/] configuration {escape(str(path))} (revision {revision}): "
        f"{escape(config_cmd.describe(config))}"
    )


async def _supervise(
    specs: list[ChildSpec],
    printer: LinePrinter,
    state: RunState,
    state_path: Path,
    announce: Callable[[], None],
    reroute: Callable[[str, int], Awaitable[None]],
) -> None:
    supervisor = Supervisor(
        specs,
        printer=printer,
        state=state,
        state_path=state_path,
        on_all_ready=announce,
        on_port_moved=reroute,
    )
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, supervisor.stop)
    try:
        await supervisor.run()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
