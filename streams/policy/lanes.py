"""Lane priority: which lanes to pause at capacity and which lane to serve next.

Owns strict-priority ordering between lanes; must not pause or dispatch anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streams.types import LANES, Lane


def lanes_to_pause(
    backlog: Mapping[Lane, int], at_capacity: bool, order: Sequence[Lane] = LANES
) -> frozenset[Lane]:
    """Lanes to stop fetching so a more urgent lane's backlog gets the free capacity.

    At capacity, every lane ordered after the most urgent lane with backlog > 0 is paused;
    that lane and those before it keep fetching. Below capacity, or with no backlog
    anywhere, nothing is paused: pausing only helps when someone is waiting for a slot
    (and pausing everything starves healthy lanes, faust #53).
    """
    _check_order(order)
    if not at_capacity:
        return frozenset()
    for i, lane in enumerate(order):
        if backlog.get(lane, 0) > 0:
            return frozenset(order[i + 1 :])
    return frozenset()


def next_lane(ready: Mapping[Lane, int], order: Sequence[Lane] = LANES) -> Lane | None:
    """The most urgent lane with ready work, or None.

    Strict priority, on purpose: urgent work always goes before standard, even if standard
    waits indefinitely under a sustained urgent load; urgent traffic is expected to be small
    and admission-limited, and background runs as a separate stage, so it is never starved
    here by construction.
    """
    _check_order(order)
    for lane in order:
        if ready.get(lane, 0) > 0:
            return lane
    return None


def _check_order(order: Sequence[Lane]) -> None:
    if len(set(order)) != len(order):
        raise ValueError(f"lane order must not repeat a lane, got {list(order)}")
