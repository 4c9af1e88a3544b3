"""The CLI's consoles and how it reports errors: one red line on stderr and an exit code, never a
traceback and never a secret (URLs are shown through ``redact_url``)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

# Exit codes: 1 for a failed operation, 2 for a wrong invocation (as click does for usage errors).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure the user can act on; its text is shown as is."""

    def __init__(self, message: str, *, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def uv_command() -> str:
    """How the user reaches uv, for the commands we suggest: `uv run` sets $UV to its own path
    (`.tools/bin/uv` after the README's first command), which need not be on PATH."""
    uv = os.environ.get("UV")
    if not uv:
        return "uv"
    with contextlib.suppress(ValueError):
        return str(Path(uv).relative_to(Path.cwd()))
    return uv


def print_error(message: str) -> None:
    """The first line in red; further lines (a server's log tail, a list) plain and dimmed."""
    first, _, rest = message.strip().partition("\n")
    err_console.print(f"[bold red]error:[/] [red]{escape(first)}[/]", soft_wrap=True)
    if rest:
        err_console.print(escape(rest), style="dim", soft_wrap=True)


def warn(message: str) -> None:
    """Something the user should know that does not fail the command."""
    err_console.print(f"[bold yellow]warning:[/] [yellow]{escape(message)}[/]", soft_wrap=True)


def fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the failures the runtime reports with readable messages into a red line + exit code."""
    # Imported here: the runtime costs ~1 s to import, and `--help` should not pay for it.
    import nats.errors

    from zhongshu.runtime.errors import RuntimeFailure

    readable: tuple[type[Exception], ...] = (RuntimeFailure,)
    try:  # the embedded stack is the `up` extra: a service image runs without it
        from zhongshu.devstack import StackError
    except ModuleNotFoundError:
        pass
    else:
        readable = (RuntimeFailure, StackError)

    try:
        yield
    except (
        typer.Exit,
        typer.Abort,
        click.exceptions.Exit,
        click.exceptions.Abort,
        click.ClickException,
    ):
        raise
    except CliError as exc:
        fail(str(exc), code=exc.code)
    except readable as exc:
        fail(str(exc))
    except nats.errors.Error as exc:
        fail(f"NATS: {exc}")
    except KeyboardInterrupt:
        fail("interrupted", code=EXIT_INTERRUPTED)
    except Exception as exc:
        # Unexpected: still one line, with the exception type to search for.
        fail(f"unexpected {type(exc).__name__}: {exc}")


def quiet_client_logs() -> None:
    """The CLI is a short-lived client: the runtime's reconnect chatter (its logger warns on
    every disconnect, including our own close) is noise here. Services configure their own."""
    logging.getLogger("zhongshu.runtime.bus").setLevel(logging.ERROR)
    logging.getLogger("nats").setLevel(logging.CRITICAL)


def safe_url(url: str | None) -> str:
    from zhongshu.runtime.bus import redact_url

    return redact_url(url) if url else "-"
