"""Refreshes pressure signals in a thread of its own, so admin round trips never hold up
the poll loop: downstream stages' lag and oldest-queued age (from the broker, so a stage
with no live worker still counts), their p95 handler latency (from pressure reports),
and this stage's own input lag.

Owns the refresh cadence and the latest snapshot; must not decide whether to pause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streams.clock import Clock
from streams.errors import StreamsError
from streams.kafka.lag_reader import GroupLag, LagReader
from streams.policy.downstream import PressureSignal
from streams.policy.drain_rate import DrainRate
from streams.runtime.pressure_reports import ReportBoard
from streams.types import TopicPartition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Watched:
    """A stage whose pressure we read: its consumer group and input topics."""

    stage: str
    group: str
    topics: tuple[str, ...]
    #: A review stage (README "Human review"): full (max_pending pending) is pressure, and
    #: its pending records' age is not (people are slow; max_wait_s bounds it).
    review: bool = False


@dataclass(frozen=True, slots=True)
class PressureSnapshot:
    """signals: per watched stage. sent_marks: how many records this worker had sent to
    each stage when its reading started, so the worker can add what it sent since (a
    reading is up to one refresh old; the sum keeps the bound between readings)."""

    signals: Mapping[str, PressureSignal | None] = field(default_factory=dict)
    own: GroupLag | None = None
    sent_marks: Mapping[str, int] = field(default_factory=dict)


class PressureFeed:
    """Reads every `refresh_s`; `snapshot()` returns the latest reading without blocking.

    A stage whose reading failed keeps its previous signal, which then ages; the policy's
    stale rule decides what an old signal means.
    """

    def __init__(
        self,
        reader: LagReader,
        clock: Clock,
        watched: Sequence[Watched],
        own: Watched,
        board: ReportBoard | None,
        *,
        refresh_s: float = 0.5,
        report_fresh_s: float = 5.0,
        sent_by_stage: Mapping[str, int] | None = None,
    ) -> None:
        self._reader = reader
        self._clock = clock
        self._watched = tuple(watched)
        self._own = own
        self._board = board
        self._refresh_s = refresh_s
        self._report_fresh_s = report_fresh_s
        # Not `or {}`: the caller's dict starts empty, and the feed must see it fill.
        self._sent_by_stage: Mapping[str, int] = sent_by_stage if sent_by_stage is not None else {}
        self._snapshot = PressureSnapshot({w.stage: None for w in self._watched})
        self._drains: dict[str, DrainRate[TopicPartition]] = {}  # per watched stage
        self._failing: dict[str, float] = {}  # what cannot be read, since when (monotonic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pressure-feed", daemon=True)
        self.refreshed = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():
            return  # closing clients a live thread still uses crashes librdkafka
        if self._board is not None:
            self._board.close()
        self._reader.close()

    def snapshot(self) -> PressureSnapshot:
        return self._snapshot

    def refresh_once(self) -> None:
        signals = dict(self._snapshot.signals)
        marks = dict(self._snapshot.sent_marks)
        if self._board is not None:
            self._board.refresh()
        now = self._clock.now()
        for watched in self._watched:
            # Taken before the read: whatever is sent after it may be missing from the reading.
            mark = self._sent_by_stage.get(watched.stage, 0)
            try:
                lag = self._reader.read(watched.group, watched.topics)
            except StreamsError as exc:
                self._unreadable(f"pressure of stage {watched.stage}", exc)
                continue
            self._readable(f"pressure of stage {watched.stage}")
            p95 = (
                self._board.p95_latency_s(
                    watched.stage, now=now, fresh_within_s=self._report_fresh_s
                )
                if self._board is not None
                else None
            )
            fill = (
                self._board.fill(watched.stage, now=now, fresh_within_s=self._report_fresh_s)
                if watched.review and self._board is not None
                else None
            )
            drain = self._drains.setdefault(watched.stage, DrainRate())
            committed = {p.tp: p.committed for p in lag.partitions if p.committed is not None}
            signals[watched.stage] = PressureSignal(
                stage=watched.stage,
                lag=lag.total_lag,
                drain_per_s=drain.observe(committed, lag.total_lag, lag.measured_at),
                oldest_age_s=0.0 if watched.review else lag.max_age_s,
                p95_latency_s=None if watched.review else p95,
                measured_at=lag.measured_at,
                review_fill=fill,
            )
            marks[watched.stage] = mark
        own = self._snapshot.own
        try:
            own = self._reader.read(self._own.group, self._own.topics)
            self._readable("own lag")
        except StreamsError as exc:
            self._unreadable("own lag", exc)
        # One reference swap: the poll thread always sees a whole snapshot.
        self._snapshot = PressureSnapshot(signals, own, marks)
        self.refreshed.set()

    def _unreadable(self, what: str, exc: StreamsError) -> None:
        # Once per outage, not every refresh: a broker down for minutes would otherwise
        # log this twice a second per watched stage.
        if what not in self._failing:
            self._failing[what] = self._clock.monotonic()
            log.warning("%s unreadable (treated as stale until it is back): %s", what, exc)

    def _readable(self, what: str) -> None:
        since = self._failing.pop(what, None)
        if since is not None:
            log.info("%s readable again after %.0f s", what, self._clock.monotonic() - since)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # the feed must outlive a bad reading
                log.exception("pressure refresh failed")
            self._stop.wait(self._refresh_s)
