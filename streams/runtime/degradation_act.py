"""What a stage worker does at a degradation level and under operators' controls: pause
its input (a level's `pause_stages`, reason `degraded`; a manual pause, reason
`operator`), send records to its review stage first (a level's `require_review`), force
and force its tools open.

Owns those reactions for one stage; must not compute the level (streams.runtime.degradation
does) nor talk to Kafka: it marks the worker's PauseSet and returns routes, and the worker
applies them.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams.runtime.degradation import DegradationNow
from streams.runtime.pauses import PauseSet
from streams.runtime.tools import ToolBox
from streams.topology import Stage, Topology
from streams.types import LANES, Lane, Record, TopicPartition

#: streams.review.records.DECISION_HEADER (a test holds them equal): importing streams.review
#: here would import the worker, which imports this module.
DECISION_HEADER = "streams.review.decision"


class StageDegradation:
    """The reactions of one stage's worker; call `mark` on every turn of its loop and on
    assignment, `review_topic` for each record it is about to hand to its handler."""

    def __init__(self, topology: Topology, stage: Stage) -> None:
        self._stage = stage
        spec = topology.degradation
        review = spec.review_detours.get(stage.name) if spec is not None else None
        self._review_topics: dict[Lane, str] = {}
        if review is not None:
            by_lane = topology.stages[review].input_topics_by_lane
            for lane in LANES:
                # The review stage's topic of this lane, or of the next less urgent lane it
                # takes (never more urgent), as an emit would route it.
                target = next((t for t in LANES[LANES.index(lane) :] if t in by_lane), None)
                if target is not None:
                    self._review_topics[lane] = by_lane[target]

    def pausing(self, now: DegradationNow) -> tuple[bool, bool]:
        """(paused by the level, paused by an operator) for this stage."""
        return (
            self._stage.name in now.view.pause_stages,
            self._stage.name in now.paused_by_operator,
        )

    def mark(
        self, pauses: PauseSet, partitions: Iterable[TopicPartition], now: DegradationNow
    ) -> None:
        degraded, operator = self.pausing(now)
        for tp in partitions:
            pauses.mark(tp, "degraded", degraded)
            pauses.mark(tp, "operator", operator)

    def review_topic(self, record: Record, lane: Lane, now: DegradationNow) -> str | None:
        """Where `record` goes instead of the handler: its review stage's topic, while the
        level requires review at this stage and the record carries no review decision yet
        (one coming back from the review stage is handled, whatever the level)."""
        if self._stage.name not in now.view.require_review:
            return None
        if any(name == DECISION_HEADER for name, _ in record.headers):
            return None
        return self._review_topics.get(lane)


def force_tools_open(tools: ToolBox | None, now: DegradationNow) -> None:
    """Apply operators' `tool --open` to this process's tools (and `--close`, `clear`)."""
    if tools is None:
        return
    for tool in tools.tools():
        tool.forced_open = tool.name in now.tools_forced_open
