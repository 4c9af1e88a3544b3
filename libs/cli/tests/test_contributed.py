"""Command groups that belong to a service come from that service: every ``typer.Typer`` in the
``zhongshu.cli`` entry-point group is a ``zhongshu <name>`` command, listed in ``--help``; one
that cannot be loaded is named in one line and the others still work."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest
import typer
from typer.testing import CliRunner

from zhongshu.cli import contributed
from zhongshu.cli.main import app

runner = CliRunner()
COLUMNS = {"COLUMNS": "200"}


def test_help_lists_the_commands_contributed_through_the_entry_point() -> None:
    groups = {ep.name: ep.value for ep in entry_points(group=contributed.GROUP)}
    # The archiver and the projector contribute theirs; the CLI itself names neither.
    assert groups["archive"] == "zhongshu.archiver.cli:app"
    assert groups["projections"] == "zhongshu.projector.cli:app"
    result = runner.invoke(app, ["--help"], env=COLUMNS)
    assert result.exit_code == 0, result.output
    for name in groups:
        assert name in result.output
        assert runner.invoke(app, [name, "--help"], env=COLUMNS).exit_code == 0


def test_a_group_that_cannot_be_loaded_is_named_and_the_rest_are_added(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [
        EntryPoint("hello", "zhongshu.cli.main:dlq_app", contributed.GROUP),
        EntryPoint("broken", "zhongshu.no_such_module:app", contributed.GROUP),
        EntryPoint("odd", "zhongshu.cli.contributed:GROUP", contributed.GROUP),
    ]
    monkeypatch.setattr(contributed, "entry_points", lambda group: entries)
    host = typer.Typer(no_args_is_help=True)
    host.command("noop")(lambda: None)

    assert contributed.add_to(host) == ["hello"]
    said = capsys.readouterr().err
    assert "cannot load the `broken` commands from zhongshu.no_such_module:app" in said
    assert "zhongshu.cli.contributed:GROUP is a str, not a typer.Typer" in said
    result = runner.invoke(host, ["--help"], env=COLUMNS)
    assert "hello" in result.output
    assert "broken" not in result.output
