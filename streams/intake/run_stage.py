"""Which stage a queued run is in: the furthest stage along the workflow whose input holds
its event, found by reading the stages' input topics from the run's submission on
(streams.kafka.key_search). For run status (the intake's query, `streams runs get`).

Owns the topology walk; must not decide anything else. Blocking, bounded by its timeout.
"""

from __future__ import annotations

from streams.errors import StreamsError
from streams.intake.run_status import furthest_stage
from streams.kafka.client_config import ClientConfig
from streams.kafka.key_search import find_keys
from streams.topology import Topology

#: How far before its submission a run's first event may be stamped (clocks differ).
_CLOCK_SLACK_MS = 2_000


def path_order(topology: Topology, entry: str) -> dict[str, int]:
    """Each stage's depth from the entry stage along `downstream` (breadth first)."""
    depth = {entry: 0}
    frontier = [entry]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for nxt in topology.stages[name].downstream:
                if nxt not in depth:
                    depth[nxt] = depth[name] + 1
                    following.append(nxt)
        frontier = following
    return depth


def find_run_stage(
    client: ClientConfig,
    topology: Topology,
    entry: str,
    run_id: str,
    since_ms: int,
    *,
    timeout_s: float,
) -> str | None:
    """The stage the run is in, or None when the search finds nothing or cannot finish
    in time (the broker away)."""
    specs = topology.all_topics()
    stage_of: dict[str, str] = {}
    for stage in topology.stages.values():
        for topic in stage.input_topics:
            stage_of.setdefault(topic, stage.name)
    try:
        found = find_keys(
            client, [(t, specs[t].partitions) for t in stage_of], [run_id.encode()],
            since_ms - _CLOCK_SLACK_MS, timeout_s=timeout_s, all_matches=True,
        )  # fmt: skip
    except StreamsError:
        return None
    topics = found.get(run_id.encode(), [])
    return furthest_stage(path_order(topology, entry), [stage_of[t] for t in topics])
