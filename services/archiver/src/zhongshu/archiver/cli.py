"""``zhongshu archive``: list, verify and restore the cold archive this service writes (monthly
compressed JSON Lines in object storage). The zhongshu CLI adds this group through the
``zhongshu.cli`` entry point (the package's ``cli`` extra).

The archive is read through its manifests; ``verify`` reads every object. Nothing here changes
the archive. The archiver's modules are imported when a command runs, so ``zhongshu --help``
stays fast."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from zhongshu.cli import runstate
from zhongshu.cli.console import (
    EXIT_USAGE,
    CliError,
    console,
    quiet_client_logs,
    reported_errors,
    warn,
)
from zhongshu.cli.options import DataDir

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from zhongshu.archiver.adapters.objectstore import ObjectStore
    from zhongshu.archiver.catalog import MonthSummary
    from zhongshu.archiver.layout import Month
    from zhongshu.archiver.restore import RestoreReport
    from zhongshu.archiver.verify import VerifyReport

STORE_ENV = "ZHONGSHU_OBJECT_STORE_URL"
DEFAULT_STORE = "file://./data/archive"
CLIENT_NAME = "zhongshu-cli-archive"

app = typer.Typer(
    help="The cold archive (monthly compressed JSON Lines in object storage): list, verify, "
    "restore.",
    no_args_is_help=True,
)

StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help=f"Archive location (default: ${STORE_ENV}, else {DEFAULT_STORE}); "
        "s3://bucket/prefix?endpoint=...&region=... for S3-compatible stores.",
        show_default=False,
    ),
]
StreamOpt = Annotated[
    str | None, typer.Option("--stream", metavar="STREAM", help="Only this stream.")
]
MonthOpt = Annotated[
    str | None, typer.Option("--month", metavar="YYYY-MM", help="Only this month.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


# ---------------------------------------------------------------- shared


@contextlib.contextmanager
def _archive_errors() -> Iterator[None]:
    """The archiver's input and store errors as one red line (exit 1, or 2 for bad input)."""
    from zhongshu.archiver.adapters.objectstore import StoreError
    from zhongshu.archiver.catalog import UnknownStream
    from zhongshu.archiver.layout import BadMonth
    from zhongshu.archiver.manifest import BadManifest
    from zhongshu.archiver.restore import NoTargetStream, RestoreError

    try:
        yield
    except NoTargetStream as exc:
        raise CliError(str(exc)) from None
    except (BadMonth, RestoreError) as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    except (StoreError, UnknownStream, BadManifest) as exc:
        raise CliError(str(exc)) from None


def _open(url: str | None) -> ObjectStore:
    from zhongshu.archiver.adapters.objectstore import open_store

    return open_store(url or os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _parse_month(text: str) -> Month:
    from zhongshu.archiver.layout import Month

    return Month.parse(text)


def _month(text: str | None) -> Month | None:
    return _parse_month(text) if text is not None else None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _progress(count: ProgressColumn | None = None) -> Progress:
    """A bar with its count (or ``count``, e.g. bytes per second), elapsed and remaining time;
    removed once done, so the summary that follows stands alone."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        count or MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


# ---------------------------------------------------------------- ls


@app.command("ls")
def ls_command(
    stream: StreamOpt = None,
    month: MonthOpt = None,
    store: StoreUrl = None,
    as_json: JsonOpt = False,
) -> None:
    """List what is archived: per stream and month the objects, events, sizes and sequence
    range; with --month, every object of that month (sequences, lines, size, SHA-256)."""
    with reported_errors(), _archive_errors():
        asyncio.run(_ls(_open(store), stream, _month(month), as_json))


async def _ls(store: ObjectStore, stream: str | None, month: Month | None, as_json: bool) -> None:
    from zhongshu.archiver import catalog

    if stream is not None:
        await catalog.require_stream(store, stream)
    summaries = await catalog.months(store, stream, month, month)
    if as_json:
        typer.echo(json.dumps([_summary_json(s, month is not None) for s in summaries], indent=2))
        return
    if not summaries:
        console.print(f"nothing archived{f' in {month}' if month else ''} at {escape(store.url)}")
        return
    console.print(_objects_table(summaries) if month is not None else _months_table(summaries))
    console.print(
        f"[dim]{sum(s.events for s in summaries)} events in "
        f"{sum(s.objects for s in summaries)} objects, "
        f"{_size(sum(s.stored_bytes for s in summaries))} at {escape(store.url)}[/]"
    )


def _summary_json(summary: MonthSummary, objects: bool) -> dict[str, Any]:
    import msgspec

    row: dict[str, Any] = {
        "stream": summary.stream,
        "month": str(summary.month),
        "objects": summary.objects,
        "events": summary.events,
        "stored_bytes": summary.stored_bytes,
        "raw_bytes": summary.raw_bytes,
        "first_seq": summary.first_seq,
        "last_seq": summary.last_seq,
    }
    if objects:
        row["entries"] = msgspec.to_builtins(summary.manifest.objects)
    return row


def _months_table(summaries: list[MonthSummary]) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("stream", "month", "objects", "events", "stored", "raw", "sequences"):
        table.add_column(col, justify="left" if col in ("stream", "month") else "right")
    for s in summaries:
        table.add_row(
            escape(s.stream),
            str(s.month),
            str(s.objects),
            str(s.events),
            _size(s.stored_bytes),
            _size(s.raw_bytes),
            f"{s.first_seq}-{s.last_seq}" if s.first_seq is not None else "-",
        )
    return table


def _objects_table(summaries: list[MonthSummary]) -> Table:
    """One row per object (``--json`` gives the full keys and every field)."""
    table = Table(box=None, header_style="bold")
    for col in ("stream", "month", "sequences", "lines", "stored", "sha256", "events from", "to"):
        table.add_column(col, justify="right" if col in ("lines", "stored") else "left")
    for s in summaries:
        for o in s.manifest.objects:
            table.add_row(
                escape(s.stream),
                str(s.month),
                f"{o.first_seq}-{o.last_seq}",
                str(o.count),
                _size(o.bytes),
                o.sha256[:12],
                o.first_time[:16].replace("T", " "),
                o.last_time[:16].replace("T", " "),
            )
    return table


# ---------------------------------------------------------------- verify


@app.command("verify")
def verify_command(
    stream: StreamOpt = None,
    month: MonthOpt = None,
    store: StoreUrl = None,
    as_json: JsonOpt = False,
) -> None:
    """Read every object the manifests list and check it: present, SHA-256, decodable, line
    count and sequence range as recorded, ascending; and across each stream's months, that the
    chunks follow each other with no gap, overlap or repeated sequence (not with --month: a
    month alone may legitimately miss chunks). Objects no manifest lists are warned about.

    Exits 1 when anything is wrong.
    """
    with reported_errors(), _archive_errors():
        report = asyncio.run(_verify(_open(store), stream, _month(month), as_json))
        if as_json:
            typer.echo(json.dumps(_verify_json(report), indent=2))
        else:
            _print_verify(report, month is not None)
        if not report.ok:
            raise CliError(f"the archive has {len(report.errors)} problem(s) (see above)")


async def _verify(
    store: ObjectStore, stream: str | None, month: Month | None, quiet: bool
) -> VerifyReport:
    from zhongshu.archiver import verify

    work = await verify.plan(store, stream, month)
    if not work.summaries:
        raise CliError(f"nothing archived{f' in {month}' if month else ''} at {store.url}")
    if quiet:
        return await verify.verify(store, work, whole_streams=month is None)
    with _progress(TransferSpeedColumn()) as progress:
        task = progress.add_task("verifying", total=work.stored_bytes)
        return await verify.verify(
            store,
            work,
            whole_streams=month is None,
            progress=lambda entry: progress.advance(task, entry.bytes),
        )


def _verify_json(report: VerifyReport) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "ok": report.ok,
        "streams": [asdict(r) for r in report.streams.values()],
        "problems": [asdict(p) for p in report.problems],
    }


def _print_verify(report: VerifyReport, one_month: bool) -> None:
    table = Table(box=None, header_style="bold")
    for col in ("stream", "months", "objects", "events", "stored", "sequences", "chunks"):
        table.add_column(col, justify="left" if col == "stream" else "right")
    for r in report.streams.values():
        table.add_row(
            escape(r.stream),
            str(r.months),
            str(r.objects),
            str(r.events),
            _size(r.stored_bytes),
            f"{r.first_seq}-{r.last_seq}" if r.first_seq is not None else "-",
            "contiguous" if r.chunks_checked else "[dim]not checked[/]",
        )
    console.print(table)
    for p in report.problems:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(f"[{colour}]{p.severity}[/] {escape(p.stream)} {p.what}: {escape(p.detail)}")
    if report.ok:
        note = " (gaps between chunks not checked for a single month)" if one_month else ""
        warnings = len(report.problems)
        console.print(
            f"[green]archive verified[/]{note}"
            + (f", {warnings} warning(s)" if warnings else ", no problems")
        )


# ---------------------------------------------------------------- restore


@app.command("restore")
def restore_command(
    stream: Annotated[
        str, typer.Option("--stream", metavar="STREAM", help="The archived stream to restore.")
    ],
    from_month: Annotated[
        str, typer.Option("--from", metavar="YYYY-MM", help="First month (event time).")
    ],
    to_month: Annotated[
        str | None,
        typer.Option("--to", metavar="YYYY-MM", help="Last month, included (default: --from)."),
    ] = None,
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            metavar="SUBJECT",
            help="Publish every message to SUBJECT; a SUBJECT ending in '.>' is a prefix put "
            "before each original subject. A stream must store it.",
        ),
    ] = None,
    projections: Annotated[
        bool,
        typer.Option(
            "--projections",
            help="Publish into the replay stream (--replay-stream) under the original "
            "subjects, for read models to rebuild from; live consumers never see them.",
        ),
    ] = False,
    replay_stream: Annotated[
        str,
        typer.Option(
            "--replay-stream",
            metavar="NAME",
            help="With --projections: the replay stream, created if missing (listens on "
            "replay.NAME.> lower-cased, stores the original subjects, keeps 7 days).",
        ),
    ] = "REPLAY",
    store: StoreUrl = None,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Republish archived messages of a stream, months --from..--to, in their original order,
    with their original headers and Nats-Msg-Id: restoring the same months twice stores them
    once within the target's duplicate window, and readers are idempotent by envelope id.

    Exits 1 when a message could not be published.
    """
    quiet_client_logs()
    with reported_errors(), _archive_errors():
        if (into is None) == (not projections):
            raise CliError("give either --into SUBJECT or --projections", code=EXIT_USAGE)
        first = _parse_month(from_month)
        last = _parse_month(to_month) if to_month else first
        report = asyncio.run(
            _restore(
                runstate.resolve_nats_url(data_dir),
                _open(store),
                stream,
                first,
                last,
                into,
                replay_stream if projections else None,
            )
        )
        _print_restore(report)
        if report.failed:
            raise CliError(f"{report.failed} message(s) were not published: {report.first_error}")


async def _restore(
    url: str,
    store: ObjectStore,
    stream: str,
    first: Month,
    last: Month,
    into: str | None,
    replay_stream: str | None,
) -> RestoreReport:
    from zhongshu.archiver import restore
    from zhongshu.runtime import bus

    target = restore.into(into) if into is not None else restore.projections(str(replay_stream))
    the_plan = await restore.plan(store, stream, first, last)
    if not the_plan.objects:
        raise CliError(f"nothing archived for {stream} in {first}..{last}")
    nc = await bus.connect(url, name=CLIENT_NAME)
    try:
        js = bus.jetstream(nc)
        if replay_stream is not None:
            await restore.ensure_replay_stream(js, replay_stream)
        with _progress() as progress:
            task = progress.add_task(f"restoring {stream}", total=the_plan.events)
            report = await restore.restore(
                nc, js, store, the_plan, target, progress=lambda n: progress.advance(task, n)
            )
        console.print(
            f"{stream} {the_plan.months[0]}..{the_plan.months[-1]} → {escape(target.description)}"
        )
        await _audit_restore(js, stream, the_plan.months, target.description, report)
        return report
    finally:
        await nc.close()


async def _audit_restore(
    js: JetStreamContext, stream: str, months: Sequence[Month], target: str, report: RestoreReport
) -> None:
    """`archive.restored` in the hub's audit trail: what was put back on the bus, and where."""
    from zhongshu.runtime import auditing

    not_audited = await auditing.record(
        js,
        source="zhongshu/cli",
        actor=auditing.operator(),
        action="archive.restored",
        target=f"{stream} {months[0]}..{months[-1]}",
        kind="archive",
        outcome="failed" if report.failed else "succeeded",
        detail=f"into {target}: {report.published} stored, {report.duplicates} already there, "
        f"{report.failed} failed",
        labels={
            "stream": stream,
            "from": str(months[0]),
            "to": str(months[-1]),
            "target_stream": report.target_stream,
            "published": str(report.published),
            "failed": str(report.failed),
        },
    )
    if not_audited:
        warn(f"the restore is not in the audit trail ({not_audited})")


def _print_restore(report: RestoreReport) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("target stream", escape(report.target_stream))
    table.add_row("read from the archive", str(report.read))
    table.add_row("stored", str(report.published))
    table.add_row("already there (duplicates dropped)", str(report.duplicates))
    table.add_row("failed", f"[red]{report.failed}[/]" if report.failed else "0")
    table.add_row("time", f"{report.seconds:.1f} s ({report.rate:,.0f} events/s)")
    console.print(table)
