"""Downstream pressure: combine each stage's lag, oldest-record age and p95 latency into
one pause verdict. Owns signal freshness and per-metric hysteresis; must not fetch signals.

Missing or stale signals (older than ``stale_after_s``, or ``None``) are handled per
``DownstreamLimits.on_stale``:
  * ``"pause"`` (default, fail safe): the stage counts as over every threshold, because we
    cannot prove it is healthy; the gates pause (subject to their dwell) and the verdict
    names ``"<stage>.stale"`` or ``"<stage>.missing"``.
  * ``"hold"``: every gate of that stage keeps its last state.
A fresh signal whose ``p95_latency_s`` is None (no worker of that stage reported a
latency lately: it is idle, or has no live worker) reads as no latency pressure. Holding
the gate instead would keep a stage paused forever behind an idle downstream; a downstream
stage with no live worker is caught by its lag and age, which come from the broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from streams.policy.drain_rate import expected_wait_s
from streams.policy.hysteresis import HysteresisGate, Thresholds
from streams.policy.review import RESUME_BELOW_FILL

Metric = Literal["lag", "age_s", "p95_s", "review_fill"]
OnStale = Literal["pause", "hold"]


@dataclass(frozen=True, slots=True)
class PressureSignal:
    """One stage's load as last measured; ``measured_at`` is wall-clock seconds."""

    stage: str
    lag: int
    oldest_age_s: float
    p95_latency_s: float | None
    measured_at: float
    #: A review stage's fill (README "Human review"): pending ÷ max_pending of its fullest
    #: freshly reporting worker; None for other stages or with no fresh report. Full
    #: (1.0) pauses the stage before it whatever its lag and age say, until the fill is
    #: below streams.policy.review.RESUME_BELOW_FILL.
    review_fill: float | None = None
    #: Records/s the stage drains while it has work (streams.policy.drain_rate); None:
    #: not known yet. With it the age gates judge the wait the queue means, see queue_age.
    drain_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class DownstreamLimits:
    pause_lag: int
    resume_lag: int
    pause_age_s: float
    resume_age_s: float
    pause_p95_s: float | None = None
    resume_p95_s: float | None = None
    min_dwell_s: float = 1.0
    stale_after_s: float = 5.0
    on_stale: OnStale = "pause"

    def __post_init__(self) -> None:
        if (self.pause_p95_s is None) != (self.resume_p95_s is None):
            raise ValueError("set both pause_p95_s and resume_p95_s, or neither")
        if not self.stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0, got {self.stale_after_s}")
        if self.on_stale not in ("pause", "hold"):
            raise ValueError(f"on_stale must be 'pause' or 'hold', got {self.on_stale!r}")
        self.thresholds()  # validates each pair (resume below pause, dwell >= 0)

    def thresholds(self) -> dict[Metric, Thresholds]:
        result: dict[Metric, Thresholds] = {
            "lag": Thresholds(self.pause_lag, self.resume_lag, self.min_dwell_s),
            "age_s": Thresholds(self.pause_age_s, self.resume_age_s, self.min_dwell_s),
        }
        if self.pause_p95_s is not None and self.resume_p95_s is not None:
            result["p95_s"] = Thresholds(self.pause_p95_s, self.resume_p95_s, self.min_dwell_s)
        return result

    def review_fill_thresholds(self) -> Thresholds:
        return Thresholds(1.0, RESUME_BELOW_FILL, self.min_dwell_s)


@dataclass(frozen=True, slots=True)
class PressureVerdict:
    paused: bool
    reasons: tuple[str, ...] = ()


class DownstreamPressure:
    """One HysteresisGate per (stage, metric); the verdict pauses if any gate is paused.

    ``evaluate`` takes the full set of stages this consumer feeds: a stage mapped to None
    is expected but unreported (missing); a stage absent from the mapping is no longer
    watched and its gates are dropped (this also keeps memory bounded by the topology).
    """

    __slots__ = ("_fill_thresholds", "_gates", "_thresholds", "limits")

    def __init__(self, limits: DownstreamLimits) -> None:
        self.limits = limits
        self._thresholds = limits.thresholds()
        self._fill_thresholds = limits.review_fill_thresholds()
        self._gates: dict[tuple[str, Metric], HysteresisGate] = {}

    def gate(self, stage: str, metric: Metric) -> HysteresisGate:
        key = (stage, metric)
        gate = self._gates.get(key)
        if gate is None:
            t = self._fill_thresholds if metric == "review_fill" else self._thresholds[metric]
            gate = self._gates[key] = HysteresisGate(t)
        return gate

    def evaluate(
        self, signals: Mapping[str, PressureSignal | None], now: float, now_mono: float
    ) -> PressureVerdict:
        for stale_key in [k for k in self._gates if k[0] not in signals]:
            del self._gates[stale_key]
        reasons: list[str] = []
        for stage, signal in signals.items():
            if signal is None or now - signal.measured_at > self.limits.stale_after_s:
                reasons.extend(self._unknown(stage, signal, now_mono))
                continue
            readings: dict[Metric, float] = {
                "lag": float(signal.lag),
                "age_s": queue_age(signal),
                "p95_s": signal.p95_latency_s if signal.p95_latency_s is not None else 0.0,
            }
            for metric in self._thresholds:
                value = readings[metric]
                gate = self.gate(stage, metric)
                if gate.update(value, now_mono):
                    reasons.append(_reason(stage, metric, value, gate))
            # No fresh report of a review worker reads as room (0.0): its lag, read from
            # the broker, still holds the stage before back.
            if self.gate(stage, "review_fill").update(signal.review_fill or 0.0, now_mono):
                reasons.append(f"{stage}.saturated")
        return PressureVerdict(paused=bool(reasons), reasons=tuple(reasons))

    def _unknown(self, stage: str, signal: PressureSignal | None, now_mono: float) -> list[str]:
        label = f"{stage}.missing" if signal is None else f"{stage}.stale"
        fail_safe = self.limits.on_stale == "pause"
        paused = False
        for metric in self._thresholds:
            gate = self.gate(stage, metric)
            # +inf is over any threshold: the gate pauses as soon as its dwell allows.
            paused |= gate.update(math.inf if fail_safe else None, now_mono)
        return [label] if paused else []


def queue_age(signal: PressureSignal) -> float:
    """The age the age gates judge: the oldest queued record's age, or, while the stage
    drains, the wait its queue means for a record arriving now (lag ÷ drain rate) if that
    is less.

    Work conserving: after a burst, every queued record is about as old as the oldest, so
    the oldest's age stays over `resume` until the queue is empty, and the stage before
    would resume only once this one had run dry, then refill it too late. What an age
    threshold protects is how long new work waits here, and that is the queue ahead of it
    at the rate it drains. A stage that does not drain (rate unknown or 0) keeps the
    oldest's age, so a stuck stage still pauses the one before."""
    wait = expected_wait_s(signal.lag, signal.drain_per_s)
    return signal.oldest_age_s if wait is None else min(signal.oldest_age_s, wait)


def _reason(stage: str, metric: Metric, value: float, gate: HysteresisGate) -> str:
    t = gate.thresholds
    name = f"{stage}.{metric}"
    if value >= t.pause_at:
        return f"{name}={_num(value)}>={_num(t.pause_at)}"
    if value >= t.resume_below:
        return f"{name}={_num(value)} not below resume {_num(t.resume_below)}"
    return f"{name}={_num(value)} below resume, within min dwell"


def _num(value: float) -> str:
    value = float(value)  # thresholds may arrive as int
    return str(int(value)) if value.is_integer() else f"{value:g}"
