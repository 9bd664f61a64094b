"""A long-running orchestrator process freezes what it imported and collects young objects less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator import gc_tuning


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_tune_freezes_the_startup_objects_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    gc_tuning.tune()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, *gc_tuning.OLDER_THRESHOLDS)
    assert gc.isenabled()  # cycles are still collected
