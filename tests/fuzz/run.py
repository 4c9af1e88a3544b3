"""Runs the fuzz harnesses, each for a bounded time in its own atheris process, and fails when
one finds an input that breaks its property. The input is saved as
``tests/fuzz/crashes/<target>-crash-<sha1>`` (libFuzzer's name): ``test_replay.py`` replays every
saved input, so a crash is a failing test until it is fixed, and stays a regression test after.

    python tests/fuzz/run.py --seconds 30            # every target, 30 s each (CI)
    python tests/fuzz/run.py --seconds 300 --target feishu

The corpus each run grows is kept in ``build/fuzz/<target>/`` (seeded from the harness's
realistic inputs), so a later run starts where the last one stopped."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGETS = ("feishu", "dingtalk", "envelope", "workflow")
CRASHES = HERE / "crashes"


def _seed(target: str, corpus: Path) -> None:
    sys.path.insert(0, str(HERE))
    harness = __import__(f"fuzz_{target}")
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(harness.SEEDS):
        (corpus / f"seed-{index:03d}").write_bytes(seed)


def fuzz(target: str, seconds: int) -> bool:
    """True when the target survived ``seconds`` of fuzzing."""
    corpus = ROOT / "build" / "fuzz" / target
    _seed(target, corpus)
    CRASHES.mkdir(exist_ok=True)
    command = [
        sys.executable,
        str(HERE / "engine.py"),
        target,
        f"-max_total_time={seconds}",
        "-timeout=30",  # an input taking this long (a YAML alias bomb, say) is a crash too
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-artifact_prefix={CRASHES}/{target}-",
        *([f"-dict={HERE / f'{target}.dict'}"] if (HERE / f"{target}.dict").exists() else []),
        "-print_final_stats=1",
        str(corpus),
    ]
    started = time.monotonic()
    log = ROOT / "build" / "fuzz" / f"{target}.log"
    with log.open("wb") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    took = time.monotonic() - started
    runs = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "stat::number_of_executed_units" in line
    ]
    count = runs[-1].split(":")[-1].strip() if runs else "?"
    print(f"fuzz {target}: {'ok' if code == 0 else 'CRASH'} ({count} inputs in {took:.0f} s)")
    if code != 0:
        print(log.read_text(errors="replace")[-4000:])
    return code == 0


def main() -> int:
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed (its wheels are for Linux): `uv sync` on Linux brings it")
        return 2
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per target (default 10)")
    parser.add_argument("--target", choices=TARGETS, action="append", help="default: all")
    args = parser.parse_args()
    failed = [t for t in args.target or TARGETS if not fuzz(t, args.seconds)]
    if failed:
        print(f"crashes in {', '.join(failed)}: inputs saved under {CRASHES.relative_to(ROOT)}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
