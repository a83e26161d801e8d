"""What each `streams control` command writes: the records, checked against the topology.

Owns the meaning of degrade / pause / resume / tool / clear and of a duration such as
`30m`; pure (callers pass the time and who): streams.control.cli reads argv and writes.
"""

from __future__ import annotations

import re

from streams.control.records import (
    ControlRecord,
    ControlState,
    forced_level,
    manual_pause,
    tool_forced_open,
)
from streams.errors import StreamsError
from streams.policy.degradation import NO_LADDER, Ladder
from streams.topology import Topology

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")


def parse_duration_s(text: str) -> float:
    """`30m`, `90s`, `2h`, `1h30m` or plain seconds; StreamsError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise StreamsError(f"not a duration: {text!r}; write e.g. 30m, 90s, 2h or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise StreamsError(f"not a duration: {text!r}; write e.g. 30m, 90s, 2h or 1h30m")
    return float(total)


def _ladder(topology: Topology) -> Ladder:
    return topology.degradation.ladder if topology.degradation is not None else NO_LADDER


def _known(kind: str, name: str, known: list[str]) -> None:
    if name not in known:
        raise StreamsError(f"unknown {kind} {name!r} (known {kind}s: {', '.join(known)})")


def degrade_record(
    topology: Topology, level: str, *, for_s: float | None, who: str, why: str | None, now: float
) -> ControlRecord:
    _known("level", level, [lv.name for lv in _ladder(topology).levels])
    at_ms = int(now * 1000)
    expires = None if for_s is None else at_ms + int(for_s * 1000)
    return forced_level(
        topology.workflow, level, who=who, why=why, at_ms=at_ms, expires_at_ms=expires
    )


def pause_record(
    topology: Topology, stage: str, *, who: str, why: str | None, now: float
) -> ControlRecord:
    _known("stage", stage, list(topology.stages))
    return manual_pause(topology.workflow, stage, who=who, why=why, at_ms=int(now * 1000))


def resume_record(
    topology: Topology, stage: str, *, who: str, why: str | None, now: float
) -> ControlRecord:
    _known("stage", stage, list(topology.stages))
    return manual_pause(
        topology.workflow, stage, who=who, why=why, at_ms=int(now * 1000), active=False
    )


def tool_record(
    topology: Topology, tool: str, *, open_: bool, who: str, why: str | None, now: float
) -> ControlRecord:
    _known("tool", tool, list(topology.tools))
    return tool_forced_open(
        topology.workflow, tool, who=who, why=why, at_ms=int(now * 1000), active=open_
    )


def clear_records(
    topology: Topology, state: ControlState, *, who: str, why: str | None, now: float
) -> list[ControlRecord]:
    """Every active override, turned off (the forced level, every manual pause, every
    tool forced open); the published level is the ladder's, not an override."""
    at_ms = int(now * 1000)
    records: list[ControlRecord] = []
    level = state.forced_record()
    if level is not None and level.level is not None:
        records.append(
            forced_level(
                topology.workflow, level.level, who=who, why=why, at_ms=at_ms, active=False
            )
        )
    for stage in sorted(state.paused_stages()):
        records.append(
            manual_pause(topology.workflow, stage, who=who, why=why, at_ms=at_ms, active=False)
        )
    for tool in sorted(state.tools_forced_open()):
        records.append(
            tool_forced_open(topology.workflow, tool, who=who, why=why, at_ms=at_ms, active=False)
        )
    return records
