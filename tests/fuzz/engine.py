"""One harness under atheris (libFuzzer), in its own process: ``python tests/fuzz/engine.py
TARGET [libFuzzer flags] CORPUS_DIR``. The runner (``run.py``) starts it; zhongshu's modules and
PyYAML are instrumented for coverage as the harness imports them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).parent))
sys.setrecursionlimit(2000)

with atheris.instrument_imports(include=["zhongshu", "yaml", "fuzzlib"]):
    harness = importlib.import_module(f"fuzz_{sys.argv[1]}")


def main() -> None:
    atheris.Setup([sys.argv[0], *sys.argv[2:]], harness.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
