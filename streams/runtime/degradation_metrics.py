"""Prometheus families of the degradation level (README "Degradation"), registered by
workers and intakes alike.

Owns their names and labels; must not decide anything (streams.runtime.degradation does).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.policy.degradation import Ladder
from streams.runtime.degradation import DegradationNow


class DegradationMetrics:
    """`streams_degradation_level{workflow,level}`: 1 for the level in force, 0 for the
    others; `streams_degradation_forced{workflow}`: 1 while an operator forces it;
    `streams_degradation_calls_total{workflow,stage,level}`: handler calls started at
    each level; `streams_degradation_decisions_total{workflow,level,outcome}`: the
    intake's decisions by level."""

    def __init__(self, registry: CollectorRegistry, workflow: str, ladder: Ladder) -> None:
        self._workflow = workflow
        self._levels = [level.name for level in ladder.levels]
        self._level = Gauge(
            "streams_degradation_level",
            "1 for the degradation level this process acts on, 0 for the others.",
            ["workflow", "level"],
            registry=registry,
        )
        self._forced = Gauge(
            "streams_degradation_forced",
            "1 while an operator forces the level (streams control W degrade).",
            ["workflow"],
            registry=registry,
        )
        self._calls = Counter(
            "streams_degradation_calls",
            "Handler calls started, by the degradation level in force when they started.",
            ["workflow", "stage", "level"],
            registry=registry,
        )
        self._decisions = Counter(
            "streams_degradation_decisions",
            "Intake decisions, by the degradation level in force and their outcome.",
            ["workflow", "level", "outcome"],
            registry=registry,
        )
        self.set(DegradationNow(view=ladder.view(0)))

    def set(self, now: DegradationNow) -> None:
        for name in self._levels:
            self._level.labels(self._workflow, name).set(1.0 if name == now.view.level else 0.0)
        self._forced.labels(self._workflow).set(1.0 if now.view.forced else 0.0)

    def decided(self, level: str, outcome: str) -> None:
        self._decisions.labels(self._workflow, level, outcome).inc()

    def call_started(self, stage: str, level: str, n: int = 1) -> None:
        self._calls.labels(self._workflow, stage, level).inc(n)
