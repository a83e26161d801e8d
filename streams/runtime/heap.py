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

__all__ = ["freeze_startup_heap", "thaw_heap"]


def freeze_startup_heap() -> int:
    """Collect once, then freeze what is left; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw_heap() -> None:
    """Hand the frozen objects back to the collector (the demo's second run reuses the
    process: what its first run left in cycles must be collectable again)."""
    gc.unfreeze()
