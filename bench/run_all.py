"""Run every benchmark in ``bench/`` (each ``*.py`` here except this file and ``_*.py`` helpers),
one after the other, each bounded in time. Figure lines (JSON) go to stdout, progress to stderr:

    uv run python bench/run_all.py                 # full run (`task bench`)
    uv run python bench/run_all.py --quick         # smoke run, a few minutes
    uv run python bench/run_all.py --only hop -- --sync always  # after --: for each script

Exit code 0 when every script finished; 1 when one failed or ran out of time (the others still
run). Whether a target was met is in the figure lines (``"met"``), not in the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Hard bound per script; each script also bounds itself (hop.py: --deadline).
FULL_TIMEOUT_S = 75 * 60
QUICK_TIMEOUT_S = 20 * 60


def scripts() -> list[Path]:
    return sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"
    )


def run(script: Path, args: list[str], timeout_s: float) -> int:
    """Run one bench script; on timeout SIGTERM it (it stops its servers and children and
    removes its temp dirs), then SIGKILL after 30 s."""
    print(f"[run_all] {script.name} {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=HERE.parent)
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        print(f"[run_all] {script.name}: over {timeout_s:.0f}s, stopping it", file=sys.stderr)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = 124
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
        raise
    elapsed = time.monotonic() - started
    print(f"[run_all] {script.name}: exit {code} after {elapsed:.0f}s", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (smaller counts, 1 run)")
    ap.add_argument("--only", action="append", default=[], help="script name(s), e.g. hop")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per script")
    ap.add_argument("--list", action="store_true", help="list the scripts and exit")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="after --: options for every script")
    a = ap.parse_args(argv)
    found = scripts()
    if a.list:
        for script in found:
            print(script.stem)
        return 0
    if a.only:
        wanted = {name.removesuffix(".py") for name in a.only}
        unknown = wanted - {s.stem for s in found}
        if unknown:
            ap.error(f"no such bench script: {', '.join(sorted(unknown))}")
        found = [s for s in found if s.stem in wanted]
    extra = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    args = (["--quick"] if a.quick else []) + extra
    timeout_s = a.timeout or (QUICK_TIMEOUT_S if a.quick else FULL_TIMEOUT_S)
    failed = [s.name for s in found if run(s, args, timeout_s) != 0]
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
