#!/usr/bin/env python3
"""The README's two commands, run as a newcomer runs them: verbatim, on a PATH with no `uv` and
no `task`. `.ci/run` and `tests/e2e/test_newcomer_path.py` both use it, so the README, CI and
the test cannot drift apart.

Standard library only: it runs before anything is installed.

    python3 .ci/readme_commands.py show 1       # print the README's first command
    python3 .ci/readme_commands.py bare-path    # print $PATH without uv, uvx and task
    python3 .ci/readme_commands.py up           # command 1: ready line, answers, stops on SIGINT
    python3 .ci/readme_commands.py test         # command 2, as written (its exit code is ours)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # a script run by path, before any install: tests/ is not a package

from tests.proctree import alive, descendants  # noqa: E402

HEADING = "## Two commands"
READY_LINE = "zhongshu is up"
HIDDEN = ("uv", "uvx", "task")
# First run on a cold machine: a venv, uv from PyPI, `uv sync` of the workspace, the stack.
READY_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 120.0
GONE_TIMEOUT_S = 10.0


class NewcomerPathBroken(RuntimeError):
    """A README command did not do what the README says."""


def extract(readme: str) -> list[str]:
    """The commands of the first fenced block under the "Two commands" heading (comments and
    blank lines dropped, backslash continuations joined)."""
    start = readme.find(HEADING)
    if start < 0:
        raise NewcomerPathBroken(f"README has no {HEADING!r} section")
    fence = re.search(r"^```[^\n]*\n(.*?)^```", readme[start:], re.DOTALL | re.MULTILINE)
    if fence is None:
        raise NewcomerPathBroken(f"no fenced block under {HEADING!r}")
    commands: list[str] = []
    pending = ""
    for raw in fence.group(1).splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append(pending + line)
        pending = ""
    if len(commands) != 2:
        raise NewcomerPathBroken(f"expected 2 commands under {HEADING!r}, found {commands}")
    return commands


def readme_commands(repo: Path = REPO) -> list[str]:
    return extract((repo / "README.md").read_text(encoding="utf-8"))


def bare_path(path: str, hidden: Sequence[str] = HIDDEN) -> str:
    """`path` with every `hidden` executable gone. A directory that holds one of them next to
    things a newcomer does have (python3 in /usr/bin, say) is replaced by a shadow directory
    of links to everything else in it."""
    kept: list[str] = []
    for entry in path.split(os.pathsep):
        folder = Path(entry)
        if not entry or not folder.is_dir():
            continue
        if not any((folder / name).exists() for name in hidden):
            kept.append(entry)
            continue
        shadow = Path(tempfile.mkdtemp(prefix="bare-path-"))
        for item in folder.iterdir():
            if item.name not in hidden:
                (shadow / item.name).symlink_to(item)
        kept.append(str(shadow))
    return os.pathsep.join(kept)


def bare_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a newcomer's shell: no uv or task on PATH, no uv run in progress,
    no zhongshu settings."""
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name.startswith(("ZHONGSHU_", "UV_RUN_", "VIRTUAL_ENV")) or name == "UV":
            del env[name]
    env["PATH"] = bare_path(env.get("PATH", os.defpath))
    return env


class _Output:
    """Collects a child's output in a thread, echoing it, and notes when the ready line passes."""

    def __init__(self, proc: subprocess.Popen[str], echo: bool) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(proc, echo), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str], echo: bool) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if echo:
                sys.stderr.write(f"  │ {line}")
            if READY_LINE in line:
                self.ready.set()

    def join(self) -> None:
        self._thread.join(timeout=5.0)

    def tail(self, n: int = 60) -> str:
        return "".join(self.lines[-n:])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def check_up(
    command: str, cwd: Path, env: Mapping[str, str], *, port: int, echo: bool = True
) -> list[str]:
    """Run the first command in the background as a terminal would (its own process group),
    wait for the ready line, ask :port for /healthz, then Ctrl-C it (SIGINT to the group) and
    check that it exits 0 with every process it started gone. Returns its output lines."""
    data = cwd / "data"
    fresh = not data.exists()
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = _Output(proc, echo)
    spawned: set[int] = set()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not output.ready.wait(0.2):
            if proc.poll() is not None:
                output.join()
                raise NewcomerPathBroken(
                    f"exited with {proc.returncode} before {READY_LINE!r}:\n{output.tail()}"
                )
            if time.monotonic() > deadline:
                raise NewcomerPathBroken(f"no {READY_LINE!r} in {READY_TIMEOUT_S:.0f} s")
        status = _get(f"http://127.0.0.1:{port}/healthz")
        if status != 200:
            raise NewcomerPathBroken(f"http://127.0.0.1:{port}/healthz answered {status}")
        spawned = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise NewcomerPathBroken(f"still running {STOP_TIMEOUT_S:.0f} s after SIGINT") from exc
        output.join()
        if code != 0:
            raise NewcomerPathBroken(f"exited with {code} after SIGINT:\n{output.tail()}")
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while (left := sorted(p for p in spawned if alive(p))) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            raise NewcomerPathBroken(f"still running after it exited: pids {left}")
        if fresh:  # what `zhongshu up` generated (secrets, stores) must not leak into the tests
            shutil.rmtree(data, ignore_errors=True)
        return output.lines
    finally:
        for pid in {proc.pid, *spawned, *descendants(proc.pid)}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="print the README's command N (1 or 2)")
    show.add_argument("n", type=int, choices=(1, 2))
    verbs.add_parser("bare-path", help="print $PATH without uv, uvx and task")
    verbs.add_parser("up", help="run command 1 on a bare PATH and check it (port 8000)")
    verbs.add_parser("test", help="run command 2 on a bare PATH; exit with its code")
    args = parser.parse_args(argv)
    try:
        commands = readme_commands()
        if args.verb == "show":
            print(commands[args.n - 1])
        elif args.verb == "bare-path":
            print(bare_path(os.environ.get("PATH", os.defpath)))
        elif args.verb == "up":
            print(f"README command 1, on a bare PATH: {commands[0]}", file=sys.stderr)
            check_up(commands[0], REPO, bare_env(), port=8000)
            print("README command 1: ready, answered on :8000, stopped cleanly", file=sys.stderr)
        else:
            print(f"README command 2, on a bare PATH: {commands[1]}", file=sys.stderr)
            return subprocess.run(["bash", "-c", commands[1]], cwd=REPO, env=bare_env()).returncode
    except NewcomerPathBroken as exc:
        print(f"README command broken: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
