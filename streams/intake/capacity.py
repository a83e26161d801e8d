"""What the intake knows of the first stage's capacity: its input lag, how fast it drains,
its p95 handler time, whether it is paused by downstream pressure (pressure reaching the
door), and the wait at the review stages on a run's path (W.reviews: pending reviews at
the clear rate people achieve). Refreshed on a thread of its own, because admin requests
block for as long as the broker does not answer and decisions must not wait for them;
`latest()` is thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from streams.clock import Clock
from streams.errors import StreamsError
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import LagReader
from streams.policy.rate import RateEstimator
from streams.policy.reading_grace import ReadingGrace
from streams.policy.review import path_review_wait
from streams.review.book import ReviewBook
from streams.runtime.pressure_reports import ReportBoard
from streams.topology import Stage, Topology


@dataclass(frozen=True, slots=True)
class StageCapacity:
    lag: int
    drain_rate_per_s: float | None
    p95_handler_s: float | None
    pressure_paused: bool
    readable: bool  # False when no reading succeeded for UNREADABLE_AFTER_S (or none yet)
    #: Expected wait at the review stages on the path (its known part), and whether a
    #: review stage there has no measured clear rate yet (streams.policy.admission).
    review_wait_s: float = 0.0
    review_wait_unknown: bool = False


class ReviewPath:
    """The review stages a run entering at `entry` passes, read from W.reviews."""

    def __init__(self, topology: Topology, client: ClientConfig, entry: str) -> None:
        self.entry = entry
        self._downstream = {name: stage.downstream for name, stage in topology.stages.items()}
        self.stages = tuple(
            name
            for name in _reachable(entry, self._downstream)
            if topology.stages[name].review is not None
        )
        self._topology = topology
        self._client = client
        self._book: ReviewBook | None = None

    def wait(self, now: float) -> tuple[float, bool]:
        """(known wait, whether some is unknown) on the slowest path; reads W.reviews to
        its end first (blocking) the first time."""
        if self._book is None:
            self._book = ReviewBook(self._topology, self._client).start()
        book = self._book
        waits = {name: book.expected_wait_s(name, now=now) for name in self.stages}
        return path_review_wait(self.entry, self._downstream, waits)

    def close(self) -> None:
        if self._book is not None:
            self._book.close()


def review_path(topology: Topology, client: ClientConfig, entry: str) -> ReviewPath | None:
    """The review stages on the path from `entry`; None when there are none."""
    path = ReviewPath(topology, client, entry)
    return path if path.stages else None


def _reachable(entry: str, downstream: dict[str, tuple[str, ...]]) -> list[str]:
    seen = [entry]
    for stage in seen:  # grows while it is walked: breadth first
        seen.extend(d for d in downstream.get(stage, ()) if d not in seen)
    return seen


#: A failed lag reading leaves the capacity readable this long after the last one that
#: succeeded (streams.policy.reading_grace: a coordinator loading is not an outage).
UNREADABLE_AFTER_S = 2.0


class CapacityFeed:
    def __init__(
        self,
        reader: LagReader,
        board: ReportBoard,
        stage: Stage,
        clock: Clock,
        *,
        report_fresh_s: float = 5.0,
        also_check: Callable[[], None] | None = None,
        reviews: ReviewPath | None = None,
    ) -> None:
        """`also_check` runs after each refresh, on the same thread: for other readings
        that may block on the broker (the intake's ledger end). `reviews`: the review
        stages on the path, whose wait the forecast adds (see `review_path`)."""
        self._also_check = also_check
        self._reviews = reviews
        self._reader = reader
        self._board = board
        self._stage = stage
        self._clock = clock
        self._rate = RateEstimator()
        self._fresh_s = report_fresh_s
        self._latest = StageCapacity(0, None, None, False, readable=False)
        self._grace = ReadingGrace(UNREADABLE_AFTER_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intake-capacity", daemon=True)

    def start(self, refresh_s: float = 0.5) -> None:
        self._refresh_s = refresh_s
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.refresh()
                if self._also_check is not None:
                    self._also_check()
            except Exception:  # the feed must outlive a bad reading
                logging.getLogger(__name__).exception("capacity refresh failed")

    def latest(self) -> StageCapacity:
        return self._latest

    def refresh(self) -> None:
        self._board.refresh()
        now = self._clock.now()
        p95 = self._board.p95_latency_s(self._stage.name, now=now, fresh_within_s=self._fresh_s)
        paused = self._board.pressure_paused(
            self._stage.name, now=now, fresh_within_s=self._fresh_s
        )
        last = self._latest
        review_wait_s, review_unknown = last.review_wait_s, last.review_wait_unknown
        if self._reviews is not None:
            try:
                review_wait_s, review_unknown = self._reviews.wait(now)
            except StreamsError as exc:  # W.reviews unreadable: unknown, which refuses nothing
                logging.getLogger(__name__).warning("review queues unreadable: %s", exc)
                review_wait_s, review_unknown = 0.0, True
        try:
            lag = self._reader.read(self._stage.consumer_group, self._stage.input_topics)
        except StreamsError:
            readable = self._grace.readable(self._clock.monotonic())
            self._latest = StageCapacity(
                last.lag, last.drain_rate_per_s, p95, paused, readable, review_wait_s,
                review_unknown,
            )  # fmt: skip
            return
        self._grace.succeeded(self._clock.monotonic())
        # Records the stage has finished with: the sum of its committed offsets.
        done = sum(p.committed or 0 for p in lag.partitions)
        self._rate.observe(done, self._clock.monotonic())
        self._latest = StageCapacity(
            lag.total_lag, self._rate.rate_per_s(), p95, paused, True, review_wait_s, review_unknown
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60.0)
        if not self._thread.is_alive():
            # Closing a consumer another thread still polls crashes the client.
            self._board.close()
            self._reader.close()
            if self._reviews is not None:
                self._reviews.close()
