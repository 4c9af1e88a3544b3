"""``zhongshu projections rebuild``: rebuild the warm tier's read models (PostgreSQL) from the
streams the projector reads, or replay over them to check that a replay changes nothing. The
zhongshu CLI adds this group through the ``zhongshu.cli`` entry point (the package's ``cli``
extra).

Each source is rebuilt in one transaction, so readers see the old rows until the new ones
commit, and a failed rebuild leaves them as they were (`rebuild.py`). The projector's modules
are imported when the command runs, so ``zhongshu --help`` stays fast."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from zhongshu.cli import runstate
from zhongshu.cli.console import EXIT_USAGE, CliError, console, quiet_client_logs, reported_errors
from zhongshu.cli.options import DataDir

if TYPE_CHECKING:
    from zhongshu.projector.rebuild import RebuildReport

POSTGRES_ENV = "ZHONGSHU_POSTGRES_URL"
REDIS_ENV = "ZHONGSHU_REDIS_URL"
RETENTION_ENV = "ZHONGSHU_WARM_RETENTION_MONTHS"
HOT_TTL_ENV = "ZHONGSHU_HOT_TTL_S"
CLIENT_NAME = "zhongshu-cli-projections"

app = typer.Typer(
    help="The warm tier's read models in PostgreSQL: rebuild them from the streams.",
    no_args_is_help=True,
)


@app.command("rebuild")
def rebuild_command(
    stream: Annotated[
        str | None,
        typer.Option(
            "--stream",
            metavar="S",
            help="Only this source: TASKS, WORKFLOWS, DELIVERIES, AUDIT, SCHEDULES, "
            "KV_triggers or KV_subscriptions (default: all).",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Replay over the current rows without emptying them; exits 1 when a message "
            "the projector had already applied changed a row (replays must change nothing).",
        ),
    ] = False,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            metavar="URL",
            help=f"The warm tier (default: ${POSTGRES_ENV}).",
            show_default=False,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            metavar="URL",
            help=f"Also refresh the hot task statuses there (default: ${REDIS_ENV}; "
            "none: the hot tier is left alone).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Empty the read models (all, or one source's) and replay their streams from sequence 1,
    with a progress bar per source and a summary.

    A running projector keeps running: its writes to a source wait while that source is
    rebuilt, then find their messages applied. With ZHONGSHU_WARM_RETENTION_MONTHS set, rows
    older than the retention are pruned again afterwards. Exits 1 when a message could not be
    projected.
    """
    quiet_client_logs()
    with reported_errors():
        url = postgres_url or os.environ.get(POSTGRES_ENV)
        if not url:
            raise CliError(f"give --postgres-url or set {POSTGRES_ENV}", code=EXIT_USAGE)
        reports = asyncio.run(
            _rebuild(
                runstate.resolve_nats_url(data_dir),
                url,
                redis_url or os.environ.get(REDIS_ENV) or None,
                stream,
                verify,
            )
        )
        _print_summary(reports, verify)
        failed = sum(r.failed for r in reports)
        if failed:
            first = next(r.first_error for r in reports if r.first_error)
            raise CliError(f"{failed} message(s) could not be projected; first: {first}")
        changed = sum(r.changed_applied for r in reports)
        if verify and changed:
            raise CliError(
                f"the replay changed {changed} row(s) the projector had already written: "
                "a projection is not idempotent"
            )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise CliError(f"{name} must be a whole number, not {raw!r}", code=EXIT_USAGE) from None


async def _rebuild(
    nats_url: str, postgres_url: str, redis_url: str | None, only: str | None, verify: bool
) -> list[RebuildReport]:
    from zhongshu.contracts.hotcache import HOT_TTL_S
    from zhongshu.projector import rebuild
    from zhongshu.projector.db import open_pool
    from zhongshu.projector.hot import HotTier
    from zhongshu.runtime import bus

    try:
        rebuild.resolve(only)
    except KeyError as exc:
        raise CliError(str(exc.args[0]), code=EXIT_USAGE) from None
    retention_months = _env_int(RETENTION_ENV, 0)
    hot_ttl_s = _env_int(HOT_TTL_ENV, HOT_TTL_S)
    pool = await open_pool(postgres_url)
    redis = None
    nc = None
    try:
        nc = await bus.connect(nats_url, name=CLIENT_NAME)
        hot = None
        if redis_url:
            from redis.asyncio import Redis

            redis = Redis.from_url(redis_url)
            hot = HotTier(redis, ttl_s=hot_ttl_s)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            tasks: dict[str, TaskID] = {}

            def advance(source: str, done: int, total: int) -> None:
                if source not in tasks:
                    verb = "replaying" if verify else "rebuilding"
                    tasks[source] = progress.add_task(f"{verb} {source}", total=total)
                progress.update(tasks[source], completed=done, total=max(total, done))

            return await rebuild.rebuild(
                bus.jetstream(nc),
                pool,
                only=only,
                truncate=not verify,
                hot=hot,
                progress=advance,
                retention_months=0 if verify else retention_months,
            )
    finally:
        if nc is not None:
            await nc.close()
        if redis is not None:
            await redis.aclose()
        await pool.close()


def _print_summary(reports: list[RebuildReport], verify: bool) -> None:
    table = Table(box=None, header_style="bold")
    table.add_column("source")
    table.add_column("messages", justify="right")
    table.add_column("rows written", justify="right")
    if verify:
        table.add_column("changed by applied messages", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("time", justify="right")
    for report in reports:
        rows = ", ".join(f"{t} {n}" for t, n in sorted(report.rows.items()) if n) or "0"
        cells = [escape(report.source), str(report.messages), rows]
        if verify:
            colour = "red" if report.changed_applied else "green"
            cells.append(f"[{colour}]{report.changed_applied}[/]")
        cells += [
            f"[red]{report.failed}[/]" if report.failed else "0",
            f"{report.seconds:.1f}s",
        ]
        table.add_row(*cells)
    console.print(table)
    messages = sum(r.messages for r in reports)
    written = sum(r.rows.total() for r in reports)
    what = "replayed over the current rows" if verify else "rebuilt"
    console.print(
        f"{len(reports)} source(s) {what}: {messages} message(s), {written} row(s) written"
    )
