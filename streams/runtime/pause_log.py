"""What an operator reads about pauses: each change of a stage's pause said once, and
partition-level pauses aggregated so a flapping partition cannot flood the log.

Owns the wording, levels and rate of pause log lines; must not decide pauses (the
policies do) or read a clock (callers pass monotonic times in).

Lines, on the ``streams.runtime.pause_log`` logger:
  * INFO once when the stage pauses: the reasons (each names the downstream stage, the
    signal and its threshold, e.g. ``act.lag=150>=100``) and every watched stage's readings.
  * INFO once when the causes change while paused (a cause is ``act.lag``, ``act.stale``
    ...; a value moving under the same cause is not a change).
  * INFO once when the stage resumes: after how long, and the readings then.
  * INFO once per change of the urgent lane's own pause (it flows past the pause
    thresholds up to a downstream stage's hard bounds).
  * DEBUG per partition and change of a partition-level reason (``local_bound``, ``lane``),
    and at most one INFO summary per ``summary_every_s`` of the partition pauses it saw
    (none when there were none): how many, for which reason, the busiest partitions, and
    how many are paused now.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from streams.policy.downstream import PressureSignal
from streams.types import PauseReason, TopicPartition

log = logging.getLogger(__name__)

#: Partition summaries name this many partitions per reason.
_SHOWN_PARTITIONS = 5


class PauseLog:
    """Pause log lines of one stage's worker. One thread calls it (the poll thread)."""

    def __init__(
        self,
        stage: str,
        stage_reason: PauseReason,
        *,
        summary_every_s: float = 60.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if summary_every_s <= 0:
            raise ValueError(f"summary_every_s must be > 0, got {summary_every_s}")
        self._stage = stage
        self._stage_reason = stage_reason
        self._summary_every_s = summary_every_s
        self._log = logger if logger is not None else log
        self._paused_since: float | None = None
        self._last_now = 0.0
        self._causes: tuple[str, ...] = ()
        self._urgent_paused = False
        self._window_started: float | None = None
        self._pauses: dict[PauseReason, dict[TopicPartition, int]] = {}
        self._paused_now: dict[PauseReason, set[TopicPartition]] = {}

    @property
    def paused_for_s(self) -> float | None:
        """None while fetching; else seconds since the latest stage-wide pause began,
        as of the last ``stage_verdict`` call."""
        return None if self._paused_since is None else self._last_now - self._paused_since

    def stage_verdict(
        self,
        paused: bool,
        reasons: tuple[str, ...],
        signals: Mapping[str, PressureSignal | None],
        now: float,
        now_mono: float,
    ) -> None:
        """The stage-wide verdict of this turn; logs only when it changed."""
        self._last_now = now_mono
        name, why = self._stage, self._stage_reason
        if not paused:
            if self._paused_since is not None:
                held = now_mono - self._paused_since
                self._log.info(
                    "stage %s resumed (%s) after %.1f s paused; readings: %s",
                    name, why, held, _readings(signals, now),
                )  # fmt: skip
                self._paused_since = None
                self._causes = ()
            return
        causes = tuple(_cause(reason) for reason in reasons)
        if self._paused_since is None:
            self._paused_since = now_mono
            self._causes = causes
            self._log.info(
                "stage %s paused (%s): %s; readings: %s",
                name, why, ", ".join(reasons) or "no reason given", _readings(signals, now),
            )  # fmt: skip
        elif causes != self._causes:
            self._causes = causes
            self._log.info(
                "stage %s still paused (%s), now by %s (paused %.1f s); readings: %s",
                name, why, ", ".join(reasons), now_mono - self._paused_since,
                _readings(signals, now),
            )  # fmt: skip

    def urgent_lane(self, paused: bool, why: str | None) -> None:
        """The urgent lane's own pause; logs only when it changed."""
        if paused == self._urgent_paused:
            return
        self._urgent_paused = paused
        if paused:
            self._log.info(
                "stage %s: urgent lane paused too: %s", self._stage, why or "no reason given"
            )
        else:
            self._log.info("stage %s: urgent lane flowing again", self._stage)

    def partition(
        self, tp: TopicPartition, reason: PauseReason, paused: bool, detail: str, now_mono: float
    ) -> None:
        """A partition-level reason changed for ``tp`` (the caller calls on changes only)."""
        self._log.debug(
            "partition %s %s (%s): %s", tp, "paused" if paused else "resumed", reason, detail
        )
        now_paused = self._paused_now.setdefault(reason, set())
        if not paused:
            now_paused.discard(tp)
            return
        now_paused.add(tp)
        counts = self._pauses.setdefault(reason, {})
        counts[tp] = counts.get(tp, 0) + 1
        if self._window_started is None:
            self._window_started = now_mono

    def forget(self, tp: TopicPartition) -> None:
        for partitions in self._paused_now.values():
            partitions.discard(tp)

    def tick(self, now_mono: float, *, force: bool = False) -> None:
        """Write the partition summary when due (call every turn; cheap when not due)."""
        started = self._window_started
        if started is None or (not force and now_mono - started < self._summary_every_s):
            return
        parts = []
        for reason, counts in self._pauses.items():
            busiest = sorted(counts.items(), key=lambda item: -item[1])[:_SHOWN_PARTITIONS]
            shown = ", ".join(f"{tp} x{n}" for tp, n in busiest)
            more = "" if len(counts) <= _SHOWN_PARTITIONS else ", ..."
            parts.append(
                f"{sum(counts.values())} for {reason} on {len(counts)} partition(s) "
                f"({shown}{more}), {len(self._paused_now.get(reason, ()))} paused now"
            )
        self._log.info(
            "stage %s: partition pauses in the last %.0f s: %s",
            self._stage, now_mono - started, "; ".join(parts),
        )  # fmt: skip
        self._pauses.clear()
        self._window_started = None


def _cause(reason: str) -> str:
    """``act.lag=150>=100`` -> ``act.lag``; ``act.lag=80 not below resume 50`` -> ``act.lag``."""
    return reason.split("=", 1)[0]


def _readings(signals: Mapping[str, PressureSignal | None], now: float) -> str:
    if not signals:
        return "none"
    return "; ".join(_reading(name, signal, now) for name, signal in signals.items())


def _reading(name: str, signal: PressureSignal | None, now: float) -> str:
    if signal is None:
        return f"{name} no reading"
    p95 = "n/a" if signal.p95_latency_s is None else f"{signal.p95_latency_s:.3g} s"
    text = f"{name} lag {signal.lag}, oldest age {signal.oldest_age_s:.0f} s, p95 {p95}"
    age = now - signal.measured_at
    return text if age < 1.0 else f"{text} (read {age:.0f} s ago)"
