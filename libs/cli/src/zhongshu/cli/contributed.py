"""Command groups that belong to a service: every installed package that registers a
``typer.Typer`` in the ``zhongshu.cli`` entry-point group (``archive =
"zhongshu.archiver.cli:app"``) becomes ``zhongshu <name>``, as ``services.py`` finds services.

Loading one imports only its command module, which imports its service's code inside each
command, so ``zhongshu --help`` stays fast. A group that fails to load is named in one red line
and left out; the other commands still work."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from zhongshu.cli.console import print_error

GROUP = "zhongshu.cli"


def add_to(app: typer.Typer) -> list[str]:
    """Add every contributed group to ``app``, by name; the names added."""
    added: list[str] = []
    for entry in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        try:
            group = entry.load()
        except Exception as exc:
            print_error(
                f"cannot load the `{entry.name}` commands from {entry.value}: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        if not isinstance(group, typer.Typer):
            print_error(f"entry point {entry.value} is a {type(group).__name__}, not a typer.Typer")
            continue
        app.add_typer(group, name=entry.name)
        added.append(entry.name)
    return added
