"""Keeps a process's start-up heap out of the cyclic collector's full passes.

Why: a worker's heap after start-up (modules, clients, the topology) lives as long as the
process, yet every full (generation 2) collection walks all of it again, holding the GIL:
in a quick demo (one process, every stage) that was 146 full collections of 70-234 ms
each in 2.5 minutes, every thread stopped meanwhile. gc.freeze() moves what exists to a
permanent generation the collector skips. Only for processes streams owns (the worker
command, the demo): an embedding application decides for its own heap. The intake's HTTP
server does the same once it is up (streams.intake.http).
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "freeze_startup_heap", "thaw_heap"]

#: Generation 0's threshold once frozen (CPython's default is 700). A stage's per-record
#: path makes objects that reference counting frees, but records held in the buffers make
#: the collector's count grow: at 700 a 200,000-event passthrough ran ~4,000 young, ~365
#: middle and ~33 full collections, 0.5-0.9 s with the start-up heap frozen (1.5-2.7 s
#: without); at this threshold it ran one (benchmarks.peers, gc_counts in its JSON).
#: Garbage in cycles waits for 20,000 net allocations instead of 700: kilobytes.
YOUNG_THRESHOLD: Final = 20_000

_replaced: list[tuple[int, int, int]] = []


def freeze_startup_heap() -> int:
    """Collect once, then freeze what is left and raise generation 0's threshold to
    YOUNG_THRESHOLD; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    if not _replaced:
        _replaced.append(gc.get_threshold())
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()


def thaw_heap() -> None:
    """Hand the frozen objects back to the collector, at the thresholds it had before
    (the demo's second run reuses the process: what its first run left in cycles must be
    collectable again)."""
    gc.unfreeze()
    if _replaced:
        gc.set_threshold(*_replaced.pop())
