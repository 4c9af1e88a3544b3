"""Every harness's property, checked without a fuzzer: on its realistic seeds and on every input
a fuzzing run saved under ``crashes/`` (each a crash found and fixed: this keeps it fixed). The
fuzzing itself is ``run.py``'s, not pytest's."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the harnesses are scripts beside this file, as run.py runs them
TARGETS = ("feishu", "dingtalk", "envelope", "workflow")
CRASHES = sorted((HERE / "crashes").glob("*-*"))


def harness(target: str) -> ModuleType:
    return importlib.import_module(f"fuzz_{target}")


@pytest.mark.parametrize("target", TARGETS)
def test_every_seed_is_accepted_or_cleanly_refused(target: str) -> None:
    module = harness(target)
    assert module.SEEDS
    for seed in module.SEEDS:
        module.check(seed)


@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_a_saved_crash_no_longer_breaks_its_target(path: Path) -> None:
    target = path.name.split("-")[0]
    assert target in TARGETS, f"{path.name}: name it <target>-…"
    harness(target).check(path.read_bytes())


def test_the_known_crashes_are_kept() -> None:
    names = {p.name for p in CRASHES}
    assert {"dingtalk-crash-atusers-is-a-number", "feishu-crash-post-content-is-a-number"} <= names
