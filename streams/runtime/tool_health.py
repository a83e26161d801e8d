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
    """This turn's verdict: which reasons hold, and why (for status and logs)."""

    unavailable: bool
    saturated: bool
    detail: str


_HEALTHY = ToolVerdict(False, False, "")


class ToolPauses:
    def __init__(self, tools: ToolBox) -> None:
        self._tools = tools
        self._saturated: set[str] = set()
        self.verdict = _HEALTHY
        self.readings: list[ToolReading] = []

    def dispatch_room(self, in_flight: int) -> int | None:
        """How many records dispatch may start now: 0 while a breaker is open, the free
        probes (less what is in flight) while one is half-open, None otherwise. Read fresh
        on every dispatch, not from the last verdict, so no record starts on a stale one."""
        room: int | None = None
        for tool in self._tools.tools():
            probes = tool.probe_room()
            if probes is not None:
                free = max(0, probes - in_flight) if probes else 0
                room = free if room is None else min(room, free)
        return room

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
    ) -> ToolVerdict:
        readings = self._tools.readings()
        self.readings = readings
        if not readings:
            return _HEALTHY
        unavailable = False
        why: list[str] = []
        for r in readings:
            if r.breaker == "open":
                unavailable = True
                why.append(f"{r.name} breaker open")
            elif r.breaker == "half_open":
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
        self.verdict = ToolVerdict(unavailable, saturated, "; ".join(why))
        return self.verdict
