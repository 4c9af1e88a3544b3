"""``zhongshu provision``: bring the server's streams and KV buckets in line with contracts, and
show what changed. ``up`` runs the same steps against its embedded server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from zhongshu.cli.console import CliError, console
from zhongshu.contracts.streams import KV_BUCKETS, STREAMS
from zhongshu.runtime import bus
from zhongshu.runtime.provision import Action, Outcome, provision, refused

CLIENT_NAME = "zhongshu-cli"

_ACTION_STYLE = {
    Action.CREATED: "green",
    Action.UPDATED: "yellow",
    Action.UNCHANGED: "dim",
    Action.REFUSED: "bold red",
}


async def provision_url(url: str, *, replicas: int, allow_data_loss: bool) -> list[Outcome]:
    """Connect, provision every declared stream and bucket, disconnect."""
    nc = await bus.connect(url, name=CLIENT_NAME)
    try:
        return await provision(
            bus.jetstream(nc),
            STREAMS,
            KV_BUCKETS,
            replicas=replicas,
            allow_data_loss=allow_data_loss,
        )
    finally:
        await nc.close()


def outcomes_table(outcomes: Sequence[Outcome]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("action")
    table.add_column("detail", overflow="fold")
    for o in outcomes:
        style = _ACTION_STYLE.get(o.action, "")
        table.add_row(o.kind, o.name, f"[{style}]{o.action.value}[/]", escape(o.detail))
    return table


def summary(outcomes: Sequence[Outcome]) -> str:
    counts = {a: sum(1 for o in outcomes if o.action is a) for a in Action}
    return ", ".join(f"{n} {a.value}" for a, n in counts.items() if n)


def refusal_message(outcomes: Sequence[Outcome]) -> str:
    lines = [
        f"{len(outcomes)} change(s) refused: they would lose stored events "
        "(rerun with --allow-data-loss once the data is archived or expendable)"
    ]
    lines += [f"{o.kind} {o.name}: {o.detail}" for o in outcomes]
    return "\n".join(lines)


def run(url: str, *, replicas: int, allow_data_loss: bool) -> None:
    """The command: provision, print the table, fail when anything was refused."""
    console.print(f"provisioning [bold]{escape(bus.redact_url(url))}[/] (replicas={replicas})")
    outcomes = asyncio.run(provision_url(url, replicas=replicas, allow_data_loss=allow_data_loss))
    console.print(outcomes_table(outcomes))
    console.print(summary(outcomes), style="dim")
    bad = refused(outcomes)
    if bad:
        raise CliError(refusal_message(bad))
