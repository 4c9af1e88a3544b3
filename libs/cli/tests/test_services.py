"""Services are found through the ``zhongshu.services`` entry points, and wrong names fail fast."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from zhongshu.cli import services
from zhongshu.cli.main import app
from zhongshu.runtime import Service


def test_every_installed_service_loads_as_a_runtime_service() -> None:
    assert "router" in services.names()
    for name in services.names():
        assert isinstance(services.load(name), Service)


def test_up_starts_the_watchdog_by_default() -> None:
    assert "watchdog" in services.select(None)  # what `zhongshu up` starts by default


def test_up_with_an_unknown_service_fails_before_starting_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["up", "--data-dir", str(data_dir), "--only", "router,nope"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "unknown service(s) nope; available: " in result.output
    assert not data_dir.exists()
