"""A started service freezes what start-up allocated and collects its young objects less
often; an operator can turn that off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from zhongshu.runtime import gctuning


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    gctuning.settle_after_start(5_000)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == 5_000


@pytest.mark.usefixtures("restored_collector")
def test_a_zero_threshold_leaves_the_collector_alone() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    gctuning.settle_after_start(0)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
