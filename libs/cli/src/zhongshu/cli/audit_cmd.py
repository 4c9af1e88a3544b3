"""``zhongshu audit ls|export|verify``: read the audit trail the projector keeps in the warm tier
(PostgreSQL), export it with its chain hashes, and check the chain (docs/operations/audit.md).

The hashing is ``zhongshu.runtime.auditchain``'s, the same the projector writes with, so an export
verifies offline with ``verify --file``. The runtime is imported when a command runs, so
``zhongshu --help`` stays fast."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.markup import escape
from rich.table import Table

from zhongshu.cli.console import EXIT_USAGE, CliError, console, quiet_client_logs, reported_errors

if TYPE_CHECKING:
    from zhongshu.runtime.auditchain import Verified
    from zhongshu.runtime.auditstore import Filters

POSTGRES_ENV = "ZHONGSHU_POSTGRES_URL"
CSV_COLUMNS = (
    "tenant", "pos", "stream_seq", "event_id", "kind", "actor", "action", "outcome", "at",
    "data", "prev_hash", "hash",
)  # fmt: skip
CHAIN_LINE = "audit_chain"
"""The first line of an unfiltered JSON Lines export: each tenant's anchor and head, so a
verification offline also sees records cut from either end."""
_AGO = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

app = typer.Typer(
    help="The audit trail: list it, export it with its hash chain, verify the chain.",
    no_args_is_help=True,
)

PostgresUrl = Annotated[
    str | None,
    typer.Option(
        "--postgres-url",
        metavar="URL",
        help=f"The warm tier (default: ${POSTGRES_ENV}).",
        show_default=False,
    ),
]
Tenant = Annotated[str | None, typer.Option("--tenant", metavar="T", help="Only this tenant.")]
Since = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="WHEN", help="Records at or after: an ISO time or an age (30m, 7d)."
    ),
]
Until = Annotated[
    str | None, typer.Option("--until", metavar="WHEN", help="Records before: as --since.")
]
Action = Annotated[
    str | None,
    typer.Option(
        "--action",
        metavar="A",
        help="Only this action (config.pushed), or a prefix ending in . or * (dlq.*).",
    ),
]
Actor = Annotated[str | None, typer.Option("--actor", metavar="WHO", help="Only this actor.")]


def parse_when(text: str | None, option: str, *, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (UTC when it has no zone) or an age before now (`90s`, `1h`, `7d`)."""
    if text is None:
        return None
    text = text.strip()
    match = _AGO.fullmatch(text)
    if match is not None:
        return (now or datetime.now(UTC)) - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{option} {text!r}: give an ISO time (2026-03-01T00:00Z) or an age (30m, 7d)",
            code=EXIT_USAGE,
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _filters(
    tenant: str | None, since: str | None, until: str | None, action: str | None, actor: str | None
) -> Filters:
    from zhongshu.runtime.auditstore import Filters

    return Filters(
        tenant=tenant,
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        action=action,
        actor=actor,
    )


def _url(postgres_url: str | None) -> str:
    url = postgres_url or os.environ.get(POSTGRES_ENV)
    if not url:
        raise CliError(f"give --postgres-url or set {POSTGRES_ENV}", code=EXIT_USAGE)
    return url


async def _connect(url: str) -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(url, server_settings={"application_name": "zhongshu-audit"})
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot reach the warm tier: {type(exc).__name__}: {exc}") from None


async def _has_chain(conn: Any) -> None:
    if await conn.fetchval("SELECT to_regclass('audit_chain')") is None:
        raise CliError(
            "this database has no audit trail with a chain: is it the projector's, and has a "
            "projector of this version started on it (migration 0004)?"
        )


def encode_cursor(at: datetime, seq: int) -> str:
    raw = f"{at.astimezone(UTC).isoformat()}|{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, seq = raw.split("|")
        return datetime.fromisoformat(at), int(seq)
    except ValueError:
        raise CliError(
            f"--cursor {cursor!r} is not one `audit ls` printed", code=EXIT_USAGE
        ) from None


# --- ls ------------------------------------------------------------------------------------------


@app.command("ls")
def ls_command(
    tenant: Tenant = None,
    since: Since = None,
    until: Until = None,
    action: Action = None,
    actor: Actor = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Records per page.")] = 50,
    cursor: Annotated[
        str | None,
        typer.Option(
            "--cursor", metavar="C", help="The next page: the cursor the last one printed."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines, one record a line.")] = False,
    postgres_url: PostgresUrl = None,
) -> None:
    """List audit records, newest first, a page at a time."""
    quiet_client_logs()
    with reported_errors():
        filters = _filters(tenant, since, until, action, actor)
        after = decode_cursor(cursor) if cursor else None
        rows = asyncio.run(_page(_url(postgres_url), filters, after, limit))
        if as_json:
            for row in rows:
                sys.stdout.write(json.dumps(_plain(row), ensure_ascii=False) + "\n")
        else:
            table = Table(box=None, header_style="bold")
            for column in ("at", "tenant", "actor", "action", "outcome", "target", "detail"):
                table.add_column(column, overflow="fold")
            for row in rows:
                data = row["data"]
                table.add_row(
                    row["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    escape(row["tenant"]),
                    escape(row["actor"]),
                    escape(row["action"]),
                    escape(row["outcome"]),
                    escape(str(data.get("target", ""))),
                    escape(str(data.get("detail", ""))),
                )
            console.print(table)
            if not rows:
                console.print("no audit records match", style="dim")
        if len(rows) == limit:
            last = rows[-1]
            hint = f"more: --cursor {encode_cursor(last['at'], last['stream_seq'])}"
            if as_json:
                typer.echo(hint, err=True)
            else:
                console.print(hint, style="dim")


async def _page(
    url: str, filters: Filters, after: tuple[datetime, int] | None, limit: int
) -> list[dict[str, Any]]:
    from zhongshu.runtime import auditstore

    conn = await _connect(url)
    try:
        await _has_chain(conn)
        return await auditstore.newest_first(conn, filters, after=after, limit=limit)
    finally:
        await conn.close()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    from zhongshu.runtime.auditchain import timestamp

    out = {key: row.get(key) for key in CSV_COLUMNS}
    out["at"] = timestamp(row["at"])
    return out


# --- export ---------------------------------------------------------------------------------------


@app.command("export")
def export_command(
    tenant: Tenant = None,
    since: Since = None,
    until: Until = None,
    action: Action = None,
    actor: Actor = None,
    fmt: Annotated[
        str, typer.Option("--format", metavar="F", help="jsonl (JSON Lines) or csv.")
    ] = "jsonl",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write here (default: stdout)."),
    ] = None,
    postgres_url: PostgresUrl = None,
) -> None:
    """Export audit records in chain order (per tenant, oldest first) with their positions and
    hashes, so `zhongshu audit verify --file` checks them offline. An unfiltered JSON Lines export
    starts with each tenant's anchor and head, so records cut from either end show too."""
    quiet_client_logs()
    with reported_errors():
        if fmt not in ("jsonl", "csv"):
            raise CliError(f"--format {fmt!r}: give jsonl or csv", code=EXIT_USAGE)
        filters = _filters(tenant, since, until, action, actor)
        url = _url(postgres_url)
        if output is None:
            count = asyncio.run(_export(url, filters, fmt, sys.stdout))
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = asyncio.run(_export(url, filters, fmt, out))
            console.print(f"exported {count} record(s) to {escape(str(output))}")


async def _export(url: str, filters: Filters, fmt: str, out: TextIO) -> int:
    from zhongshu.runtime import auditstore

    conn = await _connect(url)
    try:
        await _has_chain(conn)
        whole = (filters.since, filters.until, filters.action, filters.actor) == (None,) * 4
        writer = csv.DictWriter(out, CSV_COLUMNS) if fmt == "csv" else None
        count = 0
        # One snapshot: the chain's ends and its records as they were at one moment.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if writer is not None:
                writer.writeheader()
            elif whole:
                ends = await auditstore.ends(conn, filters.tenant)
                chain = {
                    tenant: {
                        "anchor_pos": a.pos, "anchor_hash": a.hash, "pos": h.pos, "hash": h.hash
                    }
                    for tenant, (a, h) in sorted(ends.items())
                }  # fmt: skip
                out.write(json.dumps({CHAIN_LINE: chain}) + "\n")
            async for row in auditstore.in_chain_order(conn, filters):
                plain = _plain(row)
                if writer is not None:
                    plain["data"] = json.dumps(plain["data"], ensure_ascii=False, sort_keys=True)
                    writer.writerow(plain)
                else:
                    out.write(json.dumps(plain, ensure_ascii=False) + "\n")
                count += 1
        return count
    finally:
        await conn.close()


# --- verify ---------------------------------------------------------------------------------------


@app.command("verify")
def verify_command(
    tenant: Tenant = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            help="Verify an export (JSON Lines or CSV) instead of the warm tier.",
        ),
    ] = None,
    postgres_url: PostgresUrl = None,
) -> None:
    """Recompute the hash chain of every tenant (or one); exits 1 naming the first record that
    was changed, removed or reordered. Records written before the chain existed are skipped."""
    quiet_client_logs()
    with reported_errors():
        if file is not None:
            result = verify_file(file, tenant)
        else:
            result = asyncio.run(_verify_stored(_url(postgres_url), tenant))
        checked = sum(result.records.values())
        if result.ok:
            console.print(
                f"[green]the audit chain holds[/]: {checked} record(s) in "
                f"{len(result.records)} tenant(s)"
            )
            return
        lines = [b.describe() for b in result.breaks]
        raise CliError(
            f"the audit chain is broken in {len(lines)} tenant(s); first break:\n"
            + "\n".join(lines)
        )


async def _verify_stored(url: str, tenant: str | None) -> Verified:
    from zhongshu.runtime import auditstore

    conn = await _connect(url)
    try:
        await _has_chain(conn)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await auditstore.verify_stored(conn, tenant=tenant)
    finally:
        await conn.close()


def _rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = file.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    with text:
        first = text.readline()
        text.seek(0)
        if first.startswith("{"):
            for n, line in enumerate(text, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except ValueError:
                        raise CliError(f"{file}:{n}: not a JSON line") from None
        else:
            reader = csv.DictReader(io.StringIO(text.read()))
            if set(reader.fieldnames or ()) != set(CSV_COLUMNS):
                raise CliError(f"{file}: not an audit export (CSV columns {reader.fieldnames})")
            for n, row in enumerate(reader, 2):
                row["data"] = json.loads(row["data"])
                yield n, row


def verify_file(file: Path, tenant: str | None) -> Verified:
    """Check an export: each tenant's records from its first (whose previous hash is trusted,
    unless the export carries the chain's anchor and head)."""
    from zhongshu.runtime.auditchain import Anchor, Head, verify
    from zhongshu.runtime.auditstore import chain_record

    records = []
    anchors: dict[str, Anchor] | None = None
    heads: dict[str, Head] | None = None
    for n, row in _rows(file):
        if CHAIN_LINE in row:
            ends = row[CHAIN_LINE]
            anchors = {t: Anchor(e["anchor_pos"], e["anchor_hash"]) for t, e in ends.items()}
            heads = {t: Head(e["pos"], e["hash"]) for t, e in ends.items()}
            continue
        if row.get("pos") in (None, ""):
            continue  # written before the chain existed
        if tenant is not None and row.get("tenant") != tenant:
            continue
        try:
            records.append(chain_record(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise CliError(f"{file}:{n}: not an audit record ({exc!r})") from None
    if tenant is not None:
        anchors = {t: a for t, a in (anchors or {}).items() if t == tenant} if anchors else None
        heads = {t: h for t, h in (heads or {}).items() if t == tenant} if heads else None
    return verify(records, anchors=anchors, heads=heads)
