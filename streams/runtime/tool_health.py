"""Tool health is pressure: which of a stage's partitions pause for the tools it lists, and
how much dispatch may start while one of them is sick.

Owns the `tool_unavailable` and `tool_saturated` pause reasons and the dispatch room they
leave; must not admit calls (streams.runtime.tools does) nor talk to Kafka. Marks reasons on
the worker's PauseSet; the worker applies that set to the consumer.

    breaker open                 pause input (tool_unavailable); start no new record: the
                                 buffered ones wait (their queue age rises, expiry still
                                 applies) instead of being pulled only to fail
    breaker half-open            start at most as many records as probes are free, so the
                                 probes run on records already here; input stays paused
                                 while enough records wait to probe with, else it resumes a
                                 little to admit a few on purpose
    waiting >= pause_at_waiting  pause input (tool_saturated) until it falls to half that
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.runtime.pauses import PauseSet
from streams.runtime.tools import ToolBox, ToolReading
from streams.types import TopicPartition


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    """This turn's verdict: which reasons hold, why (for status and logs), and how many
    records dispatch may start (None: no limit from tools)."""

    unavailable: bool
    saturated: bool
    dispatch_room: int | None
    detail: str


_HEALTHY = ToolVerdict(False, False, None, "")


class ToolPauses:
    def __init__(self, tools: ToolBox) -> None:
        self._tools = tools
        self._saturated: set[str] = set()
        self.verdict = _HEALTHY
        self.readings: list[ToolReading] = []

    def assign(self, pauses: PauseSet, tp: TopicPartition) -> None:
        """A new partition takes the current verdict at once, before any fetch."""
        pauses.mark(tp, "tool_unavailable", self.verdict.unavailable)
        pauses.mark(tp, "tool_saturated", self.verdict.saturated)

    def update(
        self,
        pauses: PauseSet,
        partitions: Iterable[TopicPartition],
        *,
        waiting_records: int,
        in_flight: int,
    ) -> ToolVerdict:
        readings = self._tools.readings()
        self.readings = readings
        if not readings:
            return _HEALTHY
        unavailable = False
        room: int | None = None
        why: list[str] = []
        for r in readings:
            if r.breaker == "open":
                unavailable = True
                room = 0
                why.append(f"{r.name} breaker open")
            elif r.breaker == "half_open":
                probes = max(0, r.free_probes - in_flight)
                room = probes if room is None else min(room, probes)
                if waiting_records >= r.free_probes:
                    unavailable = True
                why.append(f"{r.name} breaker half-open ({r.free_probes} probes free)")
            pause_at = self._tools.tool_spec(r.name).pause_at_waiting
            if r.waiting >= pause_at:
                self._saturated.add(r.name)
            elif r.waiting <= pause_at // 2:
                self._saturated.discard(r.name)
            if r.name in self._saturated:
                why.append(f"{r.name} has {r.waiting} calls waiting")
        saturated = bool(self._saturated)
        for tp in partitions:
            pauses.mark(tp, "tool_unavailable", unavailable)
            pauses.mark(tp, "tool_saturated", saturated)
        self.verdict = ToolVerdict(unavailable, saturated, room, "; ".join(why))
        return self.verdict
