"""streams.runtime.heap: the start-up heap frozen out of full collections, and thawed."""

from __future__ import annotations

import gc

from streams.runtime.heap import YOUNG_THRESHOLD, freeze_startup_heap, thaw_heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_frozen_objects_are_skipped_until_thawed() -> None:
    try:
        kept = _Cycle()
        # Objects other threads free leave the frozen set: compare counts loosely.
        assert freeze_startup_heap() > 0 and gc.get_freeze_count() > 0
        del kept  # unreachable, but frozen: a full collection does not see it
        assert not any(isinstance(o, _Cycle) for o in gc.get_objects())
        thaw_heap()
        assert gc.get_freeze_count() == 0
        assert gc.collect() >= 1  # thawed, the cycle is collectable again
    finally:
        thaw_heap()


def test_frozen_the_young_generation_is_collected_less_often_until_thawed() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        freeze_startup_heap()  # twice (the demo's second run): thaw still restores
        thaw_heap()
        assert gc.get_threshold() == before
    finally:
        thaw_heap()
        gc.set_threshold(*before)
