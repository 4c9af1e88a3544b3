"""The garbage collector of a long-running service, tuned once it has started.

Measured with py-spy under the whole-hub benchmark (bench/e2e.py, ``/help`` at saturation):
``gc_collect_main`` was ~15 % of the router's busy CPU. Each full collection walks every
object the process holds, and almost all of them (modules, pydantic models, the OpenTelemetry
and Starlette machinery) are created at start-up and live for ever. ``gc.freeze()`` moves them
into a permanent generation the collector skips; a larger first-generation threshold makes the
collections of short-lived per-message objects rarer (each still finds the cycles it must).
Reference counting frees almost everything a message allocates either way."""

from __future__ import annotations

import gc

# CPython's default first-generation threshold is 700 allocations.
DEFAULT_GEN0_THRESHOLD = 10_000


def settle_after_start(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> None:
    """Collect what start-up left behind, freeze the survivors, raise the young threshold.
    Called once, after the service is ready; ``gen0_threshold`` 0 leaves the collector alone."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
