"""Every command explains itself: ``--help`` exits 0 and names the command's options."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zhongshu.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            [],
            [
                "up",
                "run",
                "provision",
                "status",
                "doctor",
                "dlq",
                "config",
                "archive",
                "token",
                "projections",
            ],
        ),
        (
            ["up"],
            [
                *("--data-dir", "--only", "--no-services", "--log-format", "--replicas"),
                *("--ready-file", "--local-model"),
            ],
        ),
        (["archive"], ["ls", "verify", "restore"]),
        (["archive", "restore"], ["--stream", "--from", "--to", "--into", "--projections"]),
        (["run"], ["NAME"]),
        (["provision"], ["--replicas", "--allow-data-loss"]),
        (["status"], ["--json"]),
        (["doctor"], ["--offline", "--json", "--file", "--data-dir", "--timeout"]),
        (["dlq"], ["list", "replay"]),
        (["dlq", "list"], ["--stream", "--consumer", "--limit", "--json"]),
        (["dlq", "replay"], ["--seq", "--all", "--consumer", "--to", "--keep"]),
    ],
)
def test_help_exits_zero_and_names_every_option(command: list[str], options: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output


def test_replay_help_warns_that_every_consumer_of_the_subject_sees_a_replay() -> None:
    result = runner.invoke(app, ["dlq", "replay", "--help"], env={"COLUMNS": "200"})
    assert "every consumer of that subject" in " ".join(result.output.split())
    assert "idempotent by envelope id" in " ".join(result.output.split())


def test_unknown_service_is_one_error_line_listing_the_available_ones() -> None:
    result = runner.invoke(app, ["run", "no-such-service"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "unknown service 'no-such-service'" in result.output
    assert "router" in result.output
    assert "Traceback" not in result.output
