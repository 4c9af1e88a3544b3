"""pytest's importlib mode does not put the workspace root on sys.path: add it, so the router's
tests can use the fake platforms in ``tests/fakes``."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
