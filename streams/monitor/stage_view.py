"""Builds a stage's, the workers' and the intake's views from one round of readings.

Owns how readings combine (which age wins, which reports count as alive, how a lane and a
stage summarise their partitions); must not read Kafka or clocks (the collector passes
readings and ``now``), so it is tested with made-up readings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from streams.kafka.lag_reader import GroupLag, PartitionLag
from streams.monitor.model import (
    DecisionSeen,
    IntakeView,
    LaneView,
    PartitionView,
    PausedAt,
    StageStatus,
    StageView,
    ToolView,
    WorkerView,
)
from streams.policy.group_status import (
    SEVERITY,
    OffsetSample,
    group_status,
    partition_status,
)
from streams.runtime.pressure_reports import PressureReport, ToolHealth
from streams.topology import Stage
from streams.types import TopicPartition

#: Freshness for a worker of a stage the topology no longer has.
DEFAULT_FRESH_WITHIN_S = 5.0

_ADMISSION = {
    "accepted": "accepting",
    "collapsed": "accepting",
    "delayed": "delaying",
    "downgraded": "downgrading",
    "rejected": "rejecting",
}


def alive(report: PressureReport, now: float, fresh_within_s: float) -> bool:
    return now - report.reported_at <= fresh_within_s


def stage_view(
    stage: Stage,
    lag: GroupLag | None,
    windows: Mapping[TopicPartition, Sequence[OffsetSample]],
    *,
    first_record_ms: Mapping[TopicPartition, int],
    reports: Sequence[PressureReport],
    dead_letters_per_min: Mapping[str, float],
    now: float,
    storm_per_min: float,
    retries_per_min: Mapping[str, float] | None = None,
    retries_per_min_by_tier: Mapping[str, float] | None = None,
    escalations_per_min: Mapping[str, float] | None = None,
) -> StageView:
    """``lag`` None: the group could not be read this round (status UNKNOWN; also when its
    input topics do not exist). ``reports``
    are the stage's workers' latest, stale ones included (they are left out here).
    Retries (by reason, by tier) and escalations (by reason) are shown as given."""
    fresh_s = stage.pressure.stale_after_s
    live = [r for r in reports if r.stage == stage.name and alive(r, now, fresh_s)]
    paused_by: dict[TopicPartition, set[str]] = {}
    for report in live:
        for p in report.paused:
            paused_by.setdefault(TopicPartition(p.topic, p.partition), set()).update(p.reasons)
    lane_of = {topic: lane for lane, topic in stage.input_topics_by_lane.items()}
    partitions = tuple(
        _partition_view(p, lane_of, windows, first_record_ms, paused_by, now, bool(live))
        for p in (lag.partitions if lag is not None else ())
    )
    dead = dict(dead_letters_per_min)
    status: StageStatus
    if lag is None:
        status, why = "UNKNOWN", "not read"
    elif not partitions:
        # No partition means no input topic: nothing to judge, and "OK" would be a lie.
        status, why = "UNKNOWN", "input topics missing (streams topology apply creates them)"
    else:
        status = group_status(
            (p.status for p in partitions),
            dead_letters_per_min=sum(dead.values()),
            storm_per_min=storm_per_min,
        )
        why = _why(status, partitions, dead)
    paused: dict[str, int] = {}
    for view in partitions:
        for reason in view.paused_by:
            paused[reason] = paused.get(reason, 0) + 1
    return StageView(
        stage=stage.name,
        group=stage.consumer_group,
        background=stage.background,
        status=status,
        why=why,
        lag=sum(p.lag for p in partitions),
        time_lag_s=max((p.time_lag_s for p in partitions), default=0.0),
        oldest_age_s=max((p.oldest_age_s for p in partitions), default=0.0),
        max_queue_age_s=stage.max_queue_age_s,
        in_flight=sum(r.in_flight for r in live),
        concurrency=sum(
            stage.concurrency if r.concurrency is None else r.concurrency for r in live
        ),
        workers_alive=len(live),
        paused=paused,
        dead_letters_per_min=dead,
        lanes=tuple(_lane_views(stage, partitions, lag is not None)),
        partitions=partitions,
        retries_per_min=dict(retries_per_min or {}),
        retries_per_min_by_tier=dict(retries_per_min_by_tier or {}),
        escalations_per_min=dict(escalations_per_min or {}),
    )


def worker_views(
    reports: Iterable[PressureReport], *, now: float, fresh_within_s: Mapping[str, float]
) -> tuple[WorkerView, ...]:
    """Every worker that ever reported (the topic is compacted: one record per worker),
    alive when its latest report is fresh for its stage, newest first."""
    views = [
        WorkerView(
            stage=r.stage,
            worker=r.worker,
            alive=alive(r, now, fresh_within_s.get(r.stage, DEFAULT_FRESH_WITHIN_S)),
            reported_ago_s=max(0.0, now - r.reported_at),
            in_flight=r.in_flight,
            concurrency=r.concurrency,
            p95_latency_s=r.p95_latency_s,
            paused=tuple(PausedAt(p.topic, p.partition, p.reasons) for p in r.paused),
        )
        for r in reports
    ]
    return tuple(sorted(views, key=lambda w: (w.stage, w.reported_ago_s, w.worker)))


def tool_views(
    reports: Iterable[PressureReport], *, now: float, fresh_within_s: Mapping[str, float]
) -> tuple[ToolView, ...]:
    """Each tool the live workers report, by name: breaker states counted per worker,
    calls and slots summed (a gone worker's last report says nothing of now)."""
    by_tool: dict[str, list[tuple[str, ToolHealth]]] = {}
    for r in reports:
        if alive(r, now, fresh_within_s.get(r.stage, DEFAULT_FRESH_WITHIN_S)):
            for health in r.tools:
                by_tool.setdefault(health.name, []).append((r.stage, health))
    views = []
    for name, seen in sorted(by_tool.items()):
        breakers: dict[str, int] = {}
        for _, health in seen:
            if health.breaker is not None:
                breakers[health.breaker] = breakers.get(health.breaker, 0) + 1
        limits = [h.concurrency_limit for _, h in seen]
        views.append(
            ToolView(
                name=name,
                stages=tuple(sorted({stage for stage, _ in seen})),
                workers=len(seen),
                breakers=breakers,
                in_flight=sum(h.in_flight for _, h in seen),
                waiting=sum(h.waiting for _, h in seen),
                concurrency_limit=None if None in limits else sum(x or 0 for x in limits),
            )
        )
    return tuple(views)


def intake_view(decisions: Sequence[DecisionSeen], *, now: float) -> IntakeView:
    """Decisions per minute over the last 60 s; admission from the newest of them."""
    recent = [d for d in decisions if now - 60.0 < d.at <= now]
    by_outcome: dict[str, float] = {}
    by_reason: dict[str, float] = {}
    for d in recent:
        by_outcome[d.outcome] = by_outcome.get(d.outcome, 0.0) + 1.0
        key = f"{d.outcome}/{d.reason}"
        by_reason[key] = by_reason.get(key, 0.0) + 1.0
    newest = max(recent, key=lambda d: d.at, default=None)
    last = max((d.at for d in decisions), default=None)
    if newest is None:
        return IntakeView(by_outcome, by_reason, "no decisions", None, last)
    state = _ADMISSION.get(newest.outcome, newest.outcome)
    return IntakeView(by_outcome, by_reason, state, newest.reason, last)


def _partition_view(
    p: PartitionLag,
    lane_of: Mapping[str, str],
    windows: Mapping[TopicPartition, Sequence[OffsetSample]],
    first_record_ms: Mapping[TopicPartition, int],
    paused_by: Mapping[TopicPartition, set[str]],
    now: float,
    consumers_alive: bool,
) -> PartitionView:
    verdict = partition_status(windows.get(p.tp, ()), consumers_alive=consumers_alive)
    if p.lag <= 0:
        oldest = 0.0
    elif p.tp in first_record_ms:
        oldest = max(0.0, now - first_record_ms[p.tp] / 1000.0)
    else:
        oldest = p.oldest_age_s
    return PartitionView(
        topic=p.tp.topic,
        partition=p.tp.partition,
        lane=lane_of.get(p.tp.topic, "?"),
        end_offset=p.end_offset,
        committed=p.committed,
        lag=p.lag,
        time_lag_s=p.oldest_age_s,
        oldest_age_s=oldest,
        status=verdict.status,
        why=verdict.why,
        paused_by=tuple(sorted(paused_by.get(p.tp, ()))),
    )


def _lane_views(
    stage: Stage, partitions: Sequence[PartitionView], read: bool
) -> Iterable[LaneView]:
    for lane, topic in stage.input_topics_by_lane.items():
        parts = [p for p in partitions if p.topic == topic]
        # A lane with no partition has no topic (yet): nothing to call OK.
        status: StageStatus = (
            max((p.status for p in parts), key=SEVERITY.index) if read and parts else "UNKNOWN"
        )
        yield LaneView(
            lane=lane,
            topic=topic,
            lag=sum(p.lag for p in parts),
            time_lag_s=max((p.time_lag_s for p in parts), default=0.0),
            oldest_age_s=max((p.oldest_age_s for p in parts), default=0.0),
            status=status,
            paused_partitions=sum(1 for p in parts if p.paused_by),
        )


def _why(
    status: StageStatus, partitions: Sequence[PartitionView], dead: Mapping[str, float]
) -> str:
    if status == "ERR":
        return f"dead-letter storm: {sum(dead.values()):.0f}/min"
    worst = [p for p in partitions if p.status == status]
    if not worst or status == "OK":
        return "ok"
    first = worst[0]
    more = f" (+{len(worst) - 1} more)" if len(worst) > 1 else ""
    reasons = sorted({r for p in worst for r in p.paused_by})
    paused = f"; paused on purpose: {', '.join(reasons)}" if reasons else ""
    return f"{first.topic}[{first.partition}]: {first.why}{more}{paused}"
