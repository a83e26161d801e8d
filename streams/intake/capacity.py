"""What the intake knows of the first stage's capacity: its input lag, how fast it drains,
its p95 handler time, and whether it is paused by downstream pressure (pressure reaching
the door). Refreshed on a thread of its own, because admin requests block for as long as
the broker does not answer and decisions must not wait for them; `latest()` is thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from streams.clock import Clock
from streams.errors import StreamsError
from streams.kafka.lag_reader import LagReader
from streams.policy.rate import RateEstimator
from streams.runtime.pressure_reports import ReportBoard
from streams.topology import Stage


@dataclass(frozen=True, slots=True)
class StageCapacity:
    lag: int
    drain_rate_per_s: float | None
    p95_handler_s: float | None
    pressure_paused: bool
    readable: bool  # False when the last reading failed (broker unreachable)


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
    ) -> None:
        """`also_check` runs after each refresh, on the same thread: for other readings
        that may block on the broker (the intake's ledger end)."""
        self._also_check = also_check
        self._reader = reader
        self._board = board
        self._stage = stage
        self._clock = clock
        self._rate = RateEstimator()
        self._fresh_s = report_fresh_s
        self._latest = StageCapacity(0, None, None, False, readable=False)
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
        try:
            lag = self._reader.read(self._stage.consumer_group, self._stage.input_topics)
        except StreamsError:
            self._latest = StageCapacity(
                self._latest.lag, self._latest.drain_rate_per_s, p95, paused, readable=False
            )
            return
        # Records the stage has finished with: the sum of its committed offsets.
        done = sum(p.committed or 0 for p in lag.partitions)
        self._rate.observe(done, self._clock.monotonic())
        self._latest = StageCapacity(
            lag.total_lag, self._rate.rate_per_s(), p95, paused, readable=True
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60.0)
        if not self._thread.is_alive():
            # Closing a consumer another thread still polls crashes the client.
            self._board.close()
            self._reader.close()
