"""`zhongshu run` in an image: secrets come as files (``NAME_FILE``), and the CLI works without
the embedded stack (`zhongshu-cli` without its ``up`` extra, as deploy/image installs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zhongshu.cli import envfiles
from zhongshu.cli.console import CliError


def test_a_file_sets_its_variable_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("redis://:s3cret@redis:6379/0\n")
    (tmp_path / "key").write_text("k\r\n")
    env = {
        "ZHONGSHU_REDIS_URL_FILE": str(tmp_path / "url"),
        "MODEL_API_KEY_FILE": str(tmp_path / "key"),
        "UNRELATED": "x",
        "SSL_CERT_FILE": str(tmp_path / "no-such-bundle.pem"),  # someone else's: a path
    }
    assert envfiles.load(env) == ["MODEL_API_KEY", "ZHONGSHU_REDIS_URL"]
    assert env["ZHONGSHU_REDIS_URL"] == "redis://:s3cret@redis:6379/0"
    assert env["MODEL_API_KEY"] == "k"
    assert "SSL_CERT" not in env


def test_both_forms_at_once_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a")
    env = {"ZHONGSHU_JWT_SECRET": "b", "ZHONGSHU_JWT_SECRET_FILE": str(tmp_path / "f")}
    with pytest.raises(CliError, match="both ZHONGSHU_JWT_SECRET and ZHONGSHU_JWT_SECRET_FILE"):
        envfiles.load(env)


def test_an_unreadable_file_is_named_never_its_content(tmp_path: Path) -> None:
    env = {"ZHONGSHU_POSTGRES_URL_FILE": str(tmp_path / "missing")}
    with pytest.raises(CliError, match=r"ZHONGSHU_POSTGRES_URL_FILE: cannot read .*missing"):
        envfiles.load(env)
    assert "ZHONGSHU_POSTGRES_URL" not in env


def test_the_cli_runs_services_without_the_embedded_stack() -> None:
    """What a service image has: no `zhongshu.devstack`, no caddy. `run` loads a service and
    reports errors readably; `up` says what to install."""
    script = """
import sys
sys.modules["zhongshu.devstack"] = None  # ModuleNotFoundError on import, as if not installed
from typer.testing import CliRunner
from zhongshu.cli import services
from zhongshu.cli.console import reported_errors
from zhongshu.cli.main import app
from zhongshu.cli.runstate import resolve_nats_url
from pathlib import Path
services.load("router")
assert resolve_nats_url(Path("/nonexistent")).startswith("nats://")
import typer
try:
    with reported_errors():
        raise RuntimeError("boom")
except typer.Exit:
    pass
result = CliRunner().invoke(app, ["up"], env={"COLUMNS": "200"})
assert result.exit_code == 1, result.output
assert "install zhongshu-cli[up]" in result.output, result.output
assert "zhongshu.devstack" not in {m for m, v in sys.modules.items() if v is not None}
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")
