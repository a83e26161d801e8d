"""What a workflow's operators set and the level it runs at, read once from `W.control`:
for the CLI (`streams control W show`) and the monitor.

Owns the reader function and the view it returns; must not write nor follow the topic
(streams.control.follow does for workers and intakes).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.control.follow import ControlFollower
from streams.control.records import ControlRecord, ControlState
from streams.kafka.client_config import ClientConfig
from streams.policy.degradation import NO_LADDER, effective_level
from streams.topology import Topology


@dataclass(frozen=True, slots=True)
class ControlView:
    """level: the level in force now (the forced one while in force, else the one the
    ladder last published; the base level when none was). forced: the active forced-level
    record (its `level`, `expires_at_ms`, `who`, `why`, `at_ms`), None when not forced or
    expired. paused_stages / tools_forced_open: stage or tool -> its audit record.
    published_level: what the ladder computed last (None: never published)."""

    workflow: str
    level: str
    forced: ControlRecord | None
    paused_stages: dict[str, ControlRecord]
    tools_forced_open: dict[str, ControlRecord]
    published_level: str | None

    def to_json(self) -> dict[str, object]:
        def audit(r: ControlRecord) -> dict[str, object]:
            return {"who": r.who, "why": r.why, "at_ms": r.at_ms}

        return {
            "workflow": self.workflow,
            "level": self.level,
            "forced": None
            if self.forced is None
            else {"level": self.forced.level, "expires_at_ms": self.forced.expires_at_ms,
                  **audit(self.forced)},
            "paused_stages": {s: audit(r) for s, r in sorted(self.paused_stages.items())},
            "tools_forced_open": {t: audit(r) for t, r in sorted(self.tools_forced_open.items())},
            "published_level": self.published_level,
        }  # fmt: skip


def control_view(topology: Topology, state: ControlState, now: float) -> ControlView:
    """The view of a folded state at `now` (wall seconds). Pure."""
    ladder = topology.degradation.ladder if topology.degradation is not None else NO_LADDER
    published = state.published_level()
    computed = ladder.index_of(published) if published is not None else None
    forced = state.forced(now)
    level = ladder.levels[effective_level(ladder, computed or 0, forced, now)].name
    return ControlView(
        workflow=topology.workflow,
        level=level,
        forced=state.forced_record() if forced is not None else None,
        paused_stages=state.paused_stages(),
        tools_forced_open=state.tools_forced_open(),
        published_level=published,
    )


def read_control_state(
    topology: Topology, client: ClientConfig, *, now: float, timeout_s: float = 10.0
) -> ControlView:
    """Read `W.control` to its end and return what is in force at `now`. Raises
    StreamsError when the topic cannot be read to its end within timeout_s."""
    follower = ControlFollower(topology, client)
    try:
        follower.read_to_end(timeout_s)
        return control_view(topology, follower.state(), now)
    finally:
        follower.close()
