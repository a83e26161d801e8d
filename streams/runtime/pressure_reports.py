"""Workers' pressure reports on the workflow's compacted pressure topic: each worker says
its handler p95 latency, in-flight count, concurrency limit and paused partitions (with
their reasons) once a second; readers keep the latest per worker. Lag and age never come
from here: they are read from the broker, so a stage with no live worker still shows its
growing lag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail


@dataclass(frozen=True, slots=True)
class PausedPartition:
    """One partition a worker holds paused, and every reason it is paused for."""

    topic: str
    partition: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ToolHealth:
    """One tool as this worker's process sees it: breaker state (None: no breaker), calls
    running and waiting, and its slots now (None: unlimited)."""

    name: str
    breaker: str | None
    in_flight: int
    waiting: int
    concurrency_limit: int | None


@dataclass(frozen=True, slots=True)
class PressureReport:
    stage: str
    worker: str
    p95_latency_s: float | None
    in_flight: int
    reported_at: float  # wall seconds
    pressure_paused: bool = False  # paused by downstream pressure: the intake tightens on it
    concurrency: int | None = None  # the worker's handler-call limit (None: an older worker)
    paused: tuple[PausedPartition, ...] = ()
    tools: tuple[ToolHealth, ...] = ()  # the stage's tools (README "Tools")

    def tool(self, name: str) -> ToolHealth | None:
        return next((t for t in self.tools if t.name == name), None)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "stage": self.stage,
                "worker": self.worker,
                "p95_latency_s": self.p95_latency_s,
                "in_flight": self.in_flight,
                "reported_at": self.reported_at,
                "pressure_paused": self.pressure_paused,
                "concurrency": self.concurrency,
                "paused": [
                    {"topic": p.topic, "partition": p.partition, "reasons": list(p.reasons)}
                    for p in self.paused
                ],
                "tools": [
                    {
                        "name": t.name,
                        "breaker": t.breaker,
                        "in_flight": t.in_flight,
                        "waiting": t.waiting,
                        "concurrency_limit": t.concurrency_limit,
                    }
                    for t in self.tools
                ],
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PressureReport:
        d = json.loads(data)
        return cls(
            stage=str(d["stage"]),
            worker=str(d["worker"]),
            p95_latency_s=None if d["p95_latency_s"] is None else float(d["p95_latency_s"]),
            in_flight=int(d["in_flight"]),
            reported_at=float(d["reported_at"]),
            pressure_paused=bool(d.get("pressure_paused", False)),
            concurrency=None if d.get("concurrency") is None else int(d["concurrency"]),
            paused=tuple(
                PausedPartition(str(p["topic"]), int(p["partition"]), tuple(map(str, p["reasons"])))
                for p in d.get("paused", ())
            ),
            tools=tuple(
                ToolHealth(
                    str(t["name"]),
                    None if t["breaker"] is None else str(t["breaker"]),
                    int(t["in_flight"]),
                    int(t["waiting"]),
                    None if t["concurrency_limit"] is None else int(t["concurrency_limit"]),
                )
                for t in d.get("tools", ())
            ),
        )


def publish_report(producer: RecordProducer, topic: str, report: PressureReport) -> None:
    producer.send(topic, report.to_bytes(), key=f"{report.stage}/{report.worker}".encode())


class ReportBoard:
    """Latest report of every worker, read from the pressure topic."""

    def __init__(self, tail: TopicTail) -> None:
        self._tail = tail
        self._latest: dict[tuple[str, str], PressureReport] = {}

    def refresh(self) -> None:
        while True:
            records = self._tail.poll(500, 0.0)
            if not records:
                return
            for record in records:
                if record.value is None:
                    continue
                try:
                    report = PressureReport.from_bytes(record.value)
                except (ValueError, KeyError, TypeError):
                    continue  # a foreign or damaged report must not stop pressure reading
                self._latest[(report.stage, report.worker)] = report

    def latest(self) -> dict[tuple[str, str], PressureReport]:
        """The newest report of every (stage, worker) ever seen, stale ones included."""
        return dict(self._latest)

    def p95_latency_s(self, stage: str, *, now: float, fresh_within_s: float) -> float | None:
        """The worst p95 among the stage's workers that reported recently; None if none did."""
        fresh = [
            r.p95_latency_s
            for (s, _), r in self._latest.items()
            if s == stage and now - r.reported_at <= fresh_within_s and r.p95_latency_s is not None
        ]
        return max(fresh) if fresh else None

    def pressure_paused(self, stage: str, *, now: float, fresh_within_s: float) -> bool:
        """Whether any recently reporting worker of the stage is paused by pressure."""
        return any(
            r.pressure_paused
            for (s, _), r in self._latest.items()
            if s == stage and now - r.reported_at <= fresh_within_s
        )

    def fill(self, stage: str, *, now: float, fresh_within_s: float) -> float | None:
        """In-flight calls ÷ concurrency of the stage's fullest recently reporting worker
        (for a review stage: pending ÷ max_pending; 1.0 is full); None if none reported."""
        fills = [
            min(1.0, r.in_flight / r.concurrency)
            for (s, _), r in self._latest.items()
            if s == stage and now - r.reported_at <= fresh_within_s and r.concurrency
        ]
        return max(fills) if fills else None

    def close(self) -> None:
        self._tail.close()
