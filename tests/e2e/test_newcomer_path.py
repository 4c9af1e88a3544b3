"""The README's two commands, verbatim, in a scratch copy of this checkout, on a PATH that holds
no `uv` and no `task`: what a newcomer types on a machine with only Python 3.11+."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from zhongshu.devstack import free_port

REPO = Path(__file__).resolve().parents[2]
# The second command runs the whole suite; here it runs one quick file (pytest reads
# PYTEST_ADDOPTS), which proves the install steps and the Taskfile without recursing.
QUICK_TESTS = "libs/contracts/tests/test_envelope_round_trip.py -q"


def _load_readme_commands() -> ModuleType:
    path = REPO / ".ci" / "readme_commands.py"
    spec = importlib.util.spec_from_file_location("readme_commands", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


readme = _load_readme_commands()


def test_the_two_commands_are_extracted_from_the_readme_block() -> None:
    text = (
        "# x\n\n## Two commands\n\nintro\n\n```sh\n# 1. run\nfirst --a \\\n  --b\n\n"
        "# 2. test\nsecond\n```\n\n```sh\nnot this\n```\n"
    )
    assert readme.extract(text) == ["first --a --b", "second"]
    with pytest.raises(readme.NewcomerPathBroken):
        readme.extract("## Two commands\n\n```sh\nonly one\n```\n")


def test_the_bare_path_hides_uv_and_task_but_keeps_python(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("uv", "task", "python3"):
        (tools / name).write_text("#!/bin/sh\n")
        (tools / name).chmod(0o755)
    path = readme.bare_path(f"{tools}{os.pathsep}/usr/bin")
    assert shutil.which("uv", path=path) is None
    assert shutil.which("task", path=path) is None
    assert shutil.which("python3", path=path) is not None


def _scratch_copy(dest: Path) -> Path:
    """The checkout as a fresh clone would see it: tracked and new files, nothing ignored
    (no .venv, no .tools, no data)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = REPO / raw.decode()
        if source.is_file():
            target = dest / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_commands_work_verbatim_on_a_path_without_uv_or_task(tmp_path: Path) -> None:
    clone = _scratch_copy(tmp_path / "clone")
    up_command, test_command = readme.readme_commands(clone)
    env = readme.bare_env()
    assert shutil.which("uv", path=env["PATH"]) is None
    assert shutil.which("task", path=env["PATH"]) is None

    port = free_port()
    lines = readme.check_up(
        up_command, clone, {**env, "ZHONGSHU_HTTP_PORT": str(port)}, port=port, echo=False
    )
    output = "".join(lines)
    assert "Traceback" not in output
    assert f"http://127.0.0.1:{port}" in output

    tested = subprocess.run(
        ["bash", "-c", test_command],
        cwd=clone,
        env={**env, "PYTEST_ADDOPTS": QUICK_TESTS},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-4000:]
    assert " passed" in tested.stdout
