"""How many handler calls a stage keeps dispatched: pure, so the rule is testable alone."""

from __future__ import annotations

__all__ = ["dispatch_cap"]


def dispatch_cap(concurrency: int, capacity: int | None, batching: bool) -> int:
    """The most calls a stage keeps in its handler runner before its prefetch.

    ``concurrency``: the stage's setting. ``capacity``: the runner's calls that can run at
    once (None: no limit of its own, as for coroutines). ``batching``: the runner hands
    plain calls to its threads a batch at a time because they are fast (under half a
    millisecond each): then calls waiting for a thread cost no thread and no wake-up, and
    capping them at the thread count left a plain stage at 0.6 of an async one on
    passthrough (measured), so they are capped like coroutines, at ``concurrency``. Lane
    order is bent for at most that many calls, a fraction of a second of such calls.
    """
    if capacity == 0:
        return 0  # every thread is stuck past its timeout: nothing would start
    if capacity is None or batching:
        return concurrency
    return min(concurrency, capacity)
