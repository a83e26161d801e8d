"""One degradation level for the whole workflow: every worker and intake replica runs this
feed, which reads the same shared signals and the same control topic, so they all act on
the same level within a refresh (README "Degradation", "One level for the workflow").

Owns the refresh thread and the latest DegradationNow; gathers the ladder's signals (the
stages' oldest queued age from the broker, tool health and review queues from the pressure
reports, operators' records from `W.control`), runs the pure ladder, and publishes the
computed level to `W.control` when it changes (a process joining later starts from it).
Must not act on the level (streams.runtime.degradation_act and the intake do) and does its
Kafka I/O only through streams.kafka and streams.control.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from streams.clock import Clock
from streams.control.follow import ControlFollower
from streams.control.records import ControlRecord, ControlState, published_level
from streams.control.topic import ensure_control_topic
from streams.control.writer import ControlWriter
from streams.errors import StreamsError
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import LagReader
from streams.kafka.tail import TopicTail
from streams.policy.degradation import (
    NO_LADDER,
    NORMAL,
    FlagCondition,
    Ladder,
    LadderState,
    LevelView,
    Signals,
    effective_level,
)
from streams.runtime.pressure_reports import PressureReport, ReportBoard
from streams.topology import Topology

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 0.25  # two refreshes per half second: every process within ~1 s


@dataclass(frozen=True, slots=True)
class DegradationNow:
    """What every process acts on now: the level (with its knobs), the operators' manual
    pauses and forced-open tools (with their audit records)."""

    view: LevelView = NORMAL
    computed: int = 0
    paused_by_operator: Mapping[str, ControlRecord] = field(default_factory=dict)
    tools_forced_open: frozenset[str] = frozenset()


def ladder_of(topology: Topology) -> Ladder:
    return topology.degradation.ladder if topology.degradation is not None else NO_LADDER


def signals_from(
    topology: Topology,
    ages: Mapping[str, float],
    reports: Iterable[PressureReport],
    forced_open: Iterable[str],
    *,
    now: float,
    fresh_within_s: float,
) -> Signals:
    """The ladder's signals from one round of readings. Pure. A report older than
    `fresh_within_s` says nothing (its worker may be gone)."""
    fresh = [r for r in reports if now - r.reported_at <= fresh_within_s]
    tools_open = set(forced_open)
    saturated: set[str] = set()
    for report in fresh:
        for tool in report.tools:
            if tool.breaker == "open":
                tools_open.add(tool.name)
            spec = topology.tools.get(tool.name)
            if spec is not None and tool.waiting >= spec.pause_at_waiting:
                saturated.add(tool.name)
    return Signals(
        oldest_age_s=dict(ages),
        pressure_paused=frozenset(r.stage for r in fresh if r.pressure_paused),
        tools_open=frozenset(tools_open),
        tools_saturated=frozenset(saturated),
        reviews_full=frozenset(
            r.stage
            for r in fresh
            if topology.stages.get(r.stage) is not None
            and topology.stages[r.stage].review is not None
            and r.concurrency is not None
            and r.in_flight >= r.concurrency
        ),
    )


def age_stages(topology: Topology) -> tuple[str, ...]:
    """Stages whose oldest queued age the ladder reads: those its conditions name, and for
    an `any` condition every foreground stage that is no review stage (a background
    stage's work may wait an hour; a review's age is people's, bounded by max_wait_s)."""
    spec = topology.degradation
    if spec is None:
        return ()
    names = set(spec.watched_stages)
    if spec.reads_any_stage:
        names.update(
            s.name for s in topology.stages.values() if not s.background and s.review is None
        )
    return tuple(sorted(names))


def _needs_reports(ladder: Ladder) -> bool:
    return any(isinstance(c, FlagCondition) for level in ladder.levels for c in level.when)


class DegradationFeed:
    """start() reads `W.control` to its end (blocking, so a restarted worker knows the
    operators' pauses before its first fetch) and takes one reading; then a thread
    refreshes every `refresh_s`. now() never blocks. `on_change` runs on the feed's thread
    after a refresh changed what processes act on (a tool forced open, say)."""

    def __init__(
        self,
        topology: Topology,
        client: ClientConfig,
        clock: Clock,
        *,
        who: str,
        refresh_s: float = DEFAULT_REFRESH_S,
        report_fresh_s: float = 5.0,
        on_change: Callable[[DegradationNow], None] | None = None,
    ) -> None:
        self._topology = topology
        self._client = client
        self._clock = clock
        self._who = who
        self._refresh_s = refresh_s
        self._fresh_s = report_fresh_s
        self._on_change = on_change
        self.ladder = ladder_of(topology)
        self._stages = age_stages(topology)
        self._now = DegradationNow(view=self.ladder.view(0))
        self._state: LadderState | None = None
        self._published: str | None = None
        self._follower: ControlFollower | None = None
        self._writer: ControlWriter | None = None
        self._reader: LagReader | None = None
        self._board: ReportBoard | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="degradation", daemon=True)

    def now(self) -> DegradationNow:
        return self._now

    def start(self, timeout_s: float = 30.0) -> None:
        topology = self._topology
        ensure_control_topic(topology, self._client)
        self._follower = ControlFollower(topology, self._client)
        self._follower.read_to_end(timeout_s)
        if len(self.ladder.levels) > 1:
            self._writer = ControlWriter(topology.control_topic, self._client)
            if self._stages:
                self._reader = LagReader(Admin(self._client, timeout_s=5.0), self._clock)
            if _needs_reports(self.ladder):
                spec = topology.all_topics()[topology.pressure_topic]
                self._board = ReportBoard(
                    TopicTail(self._client, topology.pressure_topic, spec.partitions)
                )
        self.refresh_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self._thread.is_alive():
            return  # closing clients a live thread still uses crashes librdkafka
        for close in (
            self._follower.close if self._follower else None,
            self._writer.close if self._writer else None,
            self._reader.close if self._reader else None,
            self._board.close if self._board else None,
        ):
            if close is not None:
                try:
                    close()
                except Exception:  # close the rest even if one fails
                    log.exception("while closing the degradation feed")

    def refresh_once(self) -> None:
        assert self._follower is not None, "start() the feed first"
        self._follower.refresh()
        control = self._follower.state()
        now = self._clock.now()
        computed = self._compute(control, now)
        forced = control.forced(now)
        index = effective_level(self.ladder, computed, forced, now)
        forced_here = forced is not None and self.ladder.index_of(forced.level) is not None
        fresh = DegradationNow(
            view=self.ladder.view(index, forced=forced_here),
            computed=computed,
            paused_by_operator=control.paused_stages(),
            tools_forced_open=frozenset(control.tools_forced_open()),
        )
        old, self._now = self._now, fresh  # one reference swap: readers see a whole value
        if fresh != old:
            if fresh.view.level != old.view.level:
                log.warning(
                    "workflow %s now at degradation level %s%s",
                    self._topology.workflow,
                    fresh.view.level,
                    " (forced by an operator)" if fresh.view.forced else "",
                )
            if self._on_change is not None:
                self._on_change(fresh)

    def _compute(self, control: ControlState, now: float) -> int:
        if len(self.ladder.levels) == 1:
            return 0
        published = control.published_level()
        if self._state is None:
            # Join at the level the others published, so a process started while a signal
            # sits between exit and enter does not disagree with them (README).
            start = self.ladder.index_of(published) if published is not None else None
            self._state = LadderState(self.ladder, start=start or 0)
            self._published = published
        ages = self._read_ages()
        reports = self._read_reports()
        signals = signals_from(
            self._topology, ages, reports, control.tools_forced_open(),
            now=now, fresh_within_s=self._fresh_s,
        )  # fmt: skip
        computed = self._state.update(signals, self._clock.monotonic())
        name = self.ladder.levels[computed].name
        if name != published and name != self._published and self._writer is not None:
            try:
                self._writer.send_unacknowledged(
                    published_level(
                        self._topology.workflow, name, who=self._who, at_ms=int(now * 1000)
                    )
                )
                self._published = name
            except StreamsError as exc:
                log.warning("could not publish degradation level %s: %s", name, exc)
        elif name == published:
            self._published = name
        return computed

    def _read_ages(self) -> dict[str, float]:
        ages: dict[str, float] = {}
        if self._reader is None:
            return ages
        for name in self._stages:
            stage = self._topology.stages[name]
            try:
                lag = self._reader.read(stage.consumer_group, stage.input_topics)
            except StreamsError as exc:
                log.debug("age of stage %s unreadable: %s", name, exc)
                continue  # a missing reading holds the level
            ages[name] = lag.max_age_s
        return ages

    def _read_reports(self) -> list[PressureReport]:
        if self._board is None:
            return []
        self._board.refresh()
        return list(self._board.latest().values())

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.refresh_once()
            except Exception:  # the feed must outlive a bad reading
                log.exception("degradation refresh failed")
