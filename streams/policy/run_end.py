"""Which stages end a run when their handler returns without emitting: the run's main path.

Owns that rule; pure (no Kafka, no topology objects: the stage graph comes as plain maps).

A run travels from an entry stage through foreground stages' `downstream`. A handler on
that path that returns without emitting has finished the run there, so the worker writes
the run to the workflow's completed topic (the intake learns from it that the run no
longer holds capacity). Background stages (those tapping another stage's topic included:
only background stages may) run beside the run, on a copy: their end is not the run's
end, and neither is the end of a foreground stage reached only through one of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping


def main_path(
    entry_stages: Iterable[str],
    downstream: Mapping[str, Collection[str]],
    background: Collection[str],
) -> frozenset[str]:
    """The stages a run reaches from `entry_stages` through foreground stages only."""
    reached: set[str] = set()
    todo = [name for name in entry_stages if name not in background]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo.extend(n for n in downstream.get(name, ()) if n not in background)
    return frozenset(reached)
