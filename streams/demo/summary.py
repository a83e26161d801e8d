"""Numbers the demo is judged by, computed from one run's raw data: goodput against the
capacity measured in warm-up, urgent queue age and latency, wasted work, runs lost, and
what the CRM incident cost (calls made to the sick CRM, the breaker's course, runs lost,
retry amplification), the review queue's course, escalations by reason and the
degradation level's course.

Pure: no I/O, so the test and the report read the same figures.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from .run import RunData, Sample


@dataclass(frozen=True, slots=True)
class Summary:
    mode: str
    capacity_per_s: float  # the bottleneck's completion rate in the warm-up capacity probe
    goodput_overload_per_s: float  # runs finished within their deadline, per s of overload
    # The lowest goodput of any 10 s window of the overload (sliding by 1 s) from when
    # the load step reached the bottleneck (overload_judged_from_s): a dip the phase's mean
    # hides shows here.
    goodput_overload_min_window_per_s: float
    # Seconds into the overload until the bottleneck's stage first ran every slot: the
    # runs admitted as the load rose still in the stages before it (a full run: 15 s LLM
    # calls after a phase at 0.6x). 0.0 when it was busy from the start.
    overload_judged_from_s: float
    # The same goodput counted when act handed each run on (the capacity's clock): its
    # lowest 10 s window from overload_judged_from_s, and its rate over the overload.
    bottleneck_goodput_min_window_per_s: float
    bottleneck_goodput_overload_per_s: float
    goodput_by_phase: dict[str, float]  # phase -> runs finished within deadline per s
    bottleneck_goodput_by_phase: dict[str, float]  # the same, counted when act handed on
    # The bottleneck dependency's own pace in its slowest 10 s window of the overload, and
    # the seconds the controls starved it (free slots, nothing queued, a feeder paused).
    bottleneck_overload_min_window_per_s: float
    bottleneck_starved_overload_s: float
    urgent_age_p99_overload_s: float  # p99 of urgent runs' waits in stage queues, overload
    urgent_oldest_run_p99_overload_s: float  # p99 over samples: oldest unfinished urgent run
    urgent_max_queue_age_s: float  # the smallest max_queue_age_s of the stages
    urgent_latency_p50_s: float | None
    urgent_latency_p99_s: float | None
    admitted: int
    completed: int
    dead_lettered: int
    accepted_never_finished: int
    wasted_executions: int  # handler calls on runs already past their deadline
    decisions: dict[str, int]
    dead_letters: dict[str, int]
    max_rss_mb: float
    overload_age_growth_s: float  # oldest admitted run's age: end of overload minus start
    crm_incident_s: float  # how long the CRM's writes failed (0: no incident)
    crm_calls_during_incident: int  # writes that reached the CRM while it was failing
    crm_breaker_transitions: dict[str, int]  # "closed->open": n, ... (naive: none)
    crm_breaker_timeline: list[tuple[float, str]]  # (t, state) at each change seen
    runs_lost_to_crm: int  # act's runs dead-lettered by a failed write or the open breaker
    # Calls to the CRM / first attempts, for writes made while it was sick (None: no call).
    crm_retry_amplification_incident: float | None
    crm_retry_amplification_run: float | None  # the same over the whole run
    retries_total: int  # records sent to the retry tiers (governed; naive retries in-loop)
    review_max_pending: int  # the approve stage's bound (naive: none to speak of)
    review_pending_peak: int  # most pending reviews seen at once (samples, every 0.5 s)
    review_oldest_age_peak_s: float  # the oldest pending review's age at its highest
    act_paused_by_review_s: float  # seconds act was paused by a full review queue
    review_decisions: dict[str, int]  # by who: person, rule (routine), too_late
    escalations: dict[str, int]  # reason -> runs handed to people (W.escalations)
    escalations_by_stage: dict[str, int]  # "stage: reason" -> runs
    # The degradation ladder (README "Degradation"): seconds the intake acted on each level,
    # its changes (t, level), and the seconds any worker acted on another level than it.
    level_seconds: dict[str, float]
    level_timeline: list[tuple[float, str]]
    levels_apart_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _window(data: RunData, phase: str) -> tuple[float, float]:
    for name, start, end in data.phases:
        if name == phase:
            return start, end
    return 0.0, 0.0


#: Dead letters of the CRM-writing stage that the incident caused.
_CRM_STAGE = "act"
_CRM_TOOL = "crm_write"


def lost_to_crm(data: RunData) -> int:
    """Runs of the CRM-writing stage dead-lettered by a failed write (CRMUnavailable) or
    refused by its breaker (tool_unavailable: only a sick tool opens it). Not
    tool_saturated: no rate token within max_wait_s happens without an incident too."""
    return sum(
        n
        for (stage, reason, error_type), n in data.letters.items()
        if stage == _CRM_STAGE
        and (reason == "tool_unavailable" or error_type.endswith("CRMUnavailable"))
    )


def breaker_timeline(data: RunData, tool: str = _CRM_TOOL) -> list[tuple[float, str]]:
    """The tool's breaker state at each change the samples saw (every 0.5 s: a half-open
    period shorter than that may be missed; the transition counts have every one)."""
    out: list[tuple[float, str]] = []
    for sample in data.samples:
        state = sample.tools.get(tool)
        if state is not None and (not out or out[-1][1] != state):
            out.append((round(sample.t, 1), state))
    return out


def amplification(calls: int, first_calls: int) -> float | None:
    """Calls to a dependency per first attempt (1.0: no retries); None without first
    attempts (nothing to amplify)."""
    return calls / first_calls if first_calls > 0 else None


@dataclass(frozen=True, slots=True)
class ReviewCourse:
    pending_peak: int
    oldest_age_peak_s: float
    act_paused_s: float  # time the stage before was paused because the queue was full


def review_course(samples: list[Sample]) -> ReviewCourse:
    """The review queue over a run's samples: its peaks, and how long it was full and held
    the stage before it (each sample counts for the time since the previous one). Full is
    the review worker's verdict (approve.saturated: its places all taken, the ones being
    handed on included), not W.reviews' pending count, which trails it."""
    paused = 0.0
    for before, sample in pairwise(samples):
        paused += sample.t - before.t if sample.act_paused_by_review else 0.0
    return ReviewCourse(
        pending_peak=max((s.review_pending for s in samples), default=0),
        oldest_age_peak_s=max((s.review_oldest_age_s for s in samples), default=0.0),
        act_paused_s=paused,
    )


@dataclass(frozen=True, slots=True)
class LevelCourse:
    seconds: dict[str, float]
    timeline: list[tuple[float, str]]
    apart_s: float


def level_course(samples: list[Sample]) -> LevelCourse:
    """The degradation level over a run's samples: time at each level (each sample counts
    for the time since the previous one), each change, and how long the workers and the
    intake were not all at one level (a change reaches them within a feed refresh, so
    this is about a sample per change)."""
    seconds: dict[str, float] = {}
    apart = 0.0
    for before, sample in pairwise(samples):
        seconds[sample.level] = seconds.get(sample.level, 0.0) + sample.t - before.t
        if any(level != sample.level for level in sample.levels.values()):
            apart += sample.t - before.t
    timeline: list[tuple[float, str]] = []
    for sample in samples:
        if not timeline or timeline[-1][1] != sample.level:
            timeline.append((round(sample.t, 1), sample.level))
    return LevelCourse({k: round(v, 1) for k, v in seconds.items()}, timeline, round(apart, 1))


def escalations_by_reason(escalations: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """(stage, reason) counts -> reason counts, most first."""
    out: Counter[str] = Counter()
    for (_stage, reason), n in escalations.items():
        out[reason] += n
    return dict(out.most_common())


#: The width of the windows goodput is judged over in overload (README "Demo").
GOODPUT_WINDOW_S = 10.0


def good_done_s(data: RunData, *, at_bottleneck: bool = False) -> list[float]:
    """When each run that finished within its deadline finished (s since start), sorted;
    at_bottleneck: when the bottleneck's stage handed it on instead (the capacity's own
    clock: people's reviews and the stages after it shift when a run finishes, not how
    much of the bottleneck's time went to work that counted)."""
    done = data.bottleneck_done_ms
    return sorted(
        (done[c.run_id] if at_bottleneck else c.done_ms) / 1000 - data.started_wall
        for c in data.completions
        if c.deadline_ms is not None
        and c.done_ms <= c.deadline_ms
        and (not at_bottleneck or c.run_id in done)
    )


def goodput_by_phase(data: RunData, *, at_bottleneck: bool = False) -> dict[str, float]:
    """Runs finished within their deadline per s of each phase; at_bottleneck: each counted
    when the bottleneck handed it on, so a phase's figure is how much of its capacity went
    to work that counted (a run it worked on that ended late, or not at all, is its time
    wasted)."""
    done = good_done_s(data, at_bottleneck=at_bottleneck)
    return {
        name: (bisect_left(done, end) - bisect_left(done, start)) / (end - start)
        for name, start, end in data.phases
        if end > start
    }


def goodput_windows(
    data: RunData,
    phase: str = "overload",
    window_s: float = GOODPUT_WINDOW_S,
    step_s: float = 1.0,
    from_s: float = 0.0,
    *,
    at_bottleneck: bool = False,
) -> list[tuple[float, float]]:
    """(window start, runs finished within their deadline per s) for every window of
    window_s inside the phase from from_s into it, sliding by step_s: a dip anywhere in
    it shows in one of them. Shorter than a window: one window, the part judged.
    at_bottleneck: each run counted when the bottleneck handed it on (good_done_s)."""
    start, end = _window(data, phase)
    start = min(start + from_s, end)
    if end <= start:
        return []
    done = good_done_s(data, at_bottleneck=at_bottleneck)
    width = min(window_s, end - start)
    return [
        (at - start + from_s, (bisect_left(done, at + width) - bisect_left(done, at)) / width)
        for at in _window_starts(start, end, width, step_s)
    ]


def _window_starts(start: float, end: float, width: float, step_s: float) -> list[float]:
    """Where each window of `width` inside [start, end] begins, every step_s."""
    starts: list[float] = []
    at = start
    while at + width <= end + 1e-9:
        starts.append(at)
        at += step_s
    return starts


#: The stage whose dependency sets the workflow's pace, and the stages that feed it.
BOTTLENECK_STAGE = "act"
_FEEDERS = ("plan", "retrieve")


def bottleneck_windows(
    data: RunData,
    phase: str = "overload",
    window_s: float = GOODPUT_WINDOW_S,
    step_s: float = 1.0,
    from_s: float = 0.0,
) -> list[tuple[float, float]]:
    """(window start, the bottleneck dependency's completed calls per s) for every window
    of window_s inside the phase, sliding by step_s: the bottleneck's own pace, which the
    controls decide, apart from what the stages after it (people's reviews) add to when a
    run finishes. From the samples (every 0.5 s): the nearest one to each window edge."""
    start, end = _window(data, phase)
    origin = start
    start = min(start + from_s, end)
    samples = [s for s in data.samples if start - 0.5 <= s.t <= end + 0.5]
    if end <= start or len(samples) < 2:
        return []
    times = [s.t for s in samples]

    def nearest(t: float) -> Sample:
        i = bisect_left(times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(samples)]
        return samples[min(near, key=lambda j: abs(times[j] - t))]

    width = min(window_s, end - start)
    windows: list[tuple[float, float]] = []
    for at in _window_starts(start, end, width, step_s):
        first, last = nearest(at), nearest(at + width)
        if last.t > first.t:
            rate = (last.bottleneck_done - first.bottleneck_done) / (last.t - first.t)
            windows.append((at - origin, rate))
    return windows


def starved_seconds(data: RunData, phase: str = "overload") -> float:
    """Seconds of the phase in which the controls starved the bottleneck: its stage had
    free slots and nothing queued while a stage feeding it held partitions paused for
    downstream pressure (work existed upstream and was held back). Sampled every 0.5 s."""
    start, end = _window(data, phase)
    samples = [s for s in data.samples if start <= s.t <= end]
    starved = 0.0
    slots = data.concurrency.get(BOTTLENECK_STAGE, 1)
    for before, sample in pairwise(samples):
        act = sample.stages.get(BOTTLENECK_STAGE)
        if act is None or act.lag > 0 or act.in_flight >= slots:
            continue
        held = any(
            sample.stages[f].paused.get("downstream", 0) > 0 for f in _FEEDERS if f in sample.stages
        )
        if held:
            starved += sample.t - before.t
    return starved


def _first_saturated(data: RunData, samples: list[Sample]) -> float | None:
    """The first of these samples' times at which the bottleneck's stage ran every slot."""
    slots = data.concurrency.get(BOTTLENECK_STAGE, 1)
    return next(
        (
            s.t
            for s in samples
            if (load := s.stages.get(BOTTLENECK_STAGE)) is not None and load.in_flight >= slots
        ),
        None,
    )


def judged_from_s(data: RunData, phase: str = "overload") -> float:
    """Seconds into the phase from which its windows are judged: until the bottleneck's
    stage first runs every slot, the runs admitted as the load rose are still in the
    stages before it, which no control upstream can hurry (a full run: 15 s LLM calls,
    after a phase that offered 0.6x capacity and left act's queue empty). A phase whose
    first half never saturates it is judged whole: a bottleneck the controls keep from
    work fails the windows, not excused (starved_seconds names it too)."""
    start, end = _window(data, phase)
    in_phase = [s for s in data.samples if start <= s.t <= end]
    saturated_at = _first_saturated(data, in_phase)
    if saturated_at is None or saturated_at - start > (end - start) / 2:
        return 0.0
    first = in_phase[0].t if in_phase else start
    return 0.0 if saturated_at <= first else saturated_at - start


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def probe_capacity(data: RunData) -> float:
    """Runs the bottleneck's stage handed on per s in the capacity probe, from half a
    second after it first ran every slot: before that the pipeline is still filling, and
    the first half second spends what the rate limit saved up while it was not saturated
    (the CRM's burst of 10: counted in a quick run's 3 s, it read 43.4/s for 40/s; from
    saturation, the runs here read 39.8-40.1). Without such a moment, or with under a
    second of the probe after it, from the probe's second second. Counted from the
    hand-offs' own times, the clock the checks judge goodput on, not from the samples:
    a sample's count can be read a tenth of a second after its time (CI at ac4a93b:
    42.3/s over 1.5 s of samples where the hand-offs show 39.6/s)."""
    probe_start, probe_end = _window(data, "capacity probe")
    in_probe = [s for s in data.samples if probe_start <= s.t <= probe_end]
    saturated_at = _first_saturated(data, in_probe)
    since = probe_start + 1.0 if saturated_at is None else saturated_at + 0.5
    if probe_end - since < 1.0:
        since = probe_start + 1.0
    if probe_end <= since:
        return 0.0
    handed_on = sorted(ms / 1000 - data.started_wall for ms in data.bottleneck_done_ms.values())
    done = bisect_left(handed_on, probe_end) - bisect_left(handed_on, since)
    measured = done / (probe_end - since)
    # Never above the CRM tool's declared rate: over a quick run's 1.4-2 s a reading above
    # it is the count's grain, not capacity (act releases a partition's hand-offs in
    # offset order, in bunches: a quick run at 1e7ca5b read 42.8/s for 40/s).
    ceiling = data.tool_rates.get(_CRM_TOOL)
    return measured if ceiling is None else min(measured, ceiling)


def summarize(data: RunData) -> Summary:
    capacity = probe_capacity(data)
    judged_from = judged_from_s(data)
    start, end = _window(data, "overload")
    wall_start = data.started_wall
    by_phase = goodput_by_phase(data)
    at_act = goodput_by_phase(data, at_bottleneck=True)
    # The naive run has one queue (a plain loop), so its urgent runs wait in all of it.
    lanes = ("urgent",) if data.mode != "naive" else ("urgent", "standard", "background")
    # Queue age of urgent runs: how long each waited in a stage's queue before a handler
    # took it (in flight is not queued: a slow LLM call is latency, not queueing).
    wall_start, wall_end = data.started_wall + start, data.started_wall + end
    urgent_ages = [
        wait
        for at_ms, lane, _stage, wait in data.waits
        if lane in lanes and wall_start <= at_ms / 1000 <= wall_end
    ]
    ages = oldest_run_ages(data)
    in_overload = [a for t, a in ages if start <= t <= end]
    urgent_oldest = [a["urgent"] for a in in_overload]
    # End to end: the oldest admitted, unfinished run of any lane (what callers wait on).
    oldest_any = [max(a.values()) for a in in_overload]
    growth = oldest_any[-1] - oldest_any[0] if len(oldest_any) >= 2 else 0.0
    urgent_latency = [
        (c.done_ms - c.created_ms) / 1000 for c in data.completions if c.lane == "urgent"
    ]
    # An escalated run has ended too: handed to people, with its event (W.escalations).
    finished = (
        {c.run_id for c in data.completions} | set(data.dead_run_ids) | data.escalated_run_ids
    )
    review = review_course(data.samples)
    levels = level_course(data.samples)
    admitted = set(data.submissions.admitted)
    decisions: dict[str, int] = {}
    for (_lane, outcome), n in data.submissions.decisions.items():
        decisions[outcome] = decisions.get(outcome, 0) + n
    return Summary(
        mode=data.mode,
        capacity_per_s=capacity,
        goodput_overload_per_s=by_phase.get("overload", 0.0),
        goodput_overload_min_window_per_s=min(
            (rate for _at, rate in goodput_windows(data, from_s=judged_from)), default=0.0
        ),
        overload_judged_from_s=judged_from,
        bottleneck_goodput_min_window_per_s=min(
            (rate for _at, rate in goodput_windows(data, from_s=judged_from, at_bottleneck=True)),
            default=0.0,
        ),
        bottleneck_goodput_overload_per_s=at_act.get("overload", 0.0),
        goodput_by_phase=by_phase,
        bottleneck_goodput_by_phase=at_act,
        bottleneck_overload_min_window_per_s=min(
            (rate for _at, rate in bottleneck_windows(data, from_s=judged_from)), default=0.0
        ),
        bottleneck_starved_overload_s=starved_seconds(data),
        urgent_age_p99_overload_s=_quantile(urgent_ages, 0.99) or 0.0,
        urgent_oldest_run_p99_overload_s=_quantile(urgent_oldest, 0.99) or 0.0,
        urgent_max_queue_age_s=min(data.max_queue_age_s.values(), default=0.0),
        urgent_latency_p50_s=_quantile(urgent_latency, 0.50),
        urgent_latency_p99_s=_quantile(urgent_latency, 0.99),
        admitted=len(admitted),
        completed=len({c.run_id for c in data.completions}),
        dead_lettered=sum(data.dead_letters.values()),
        accepted_never_finished=len(admitted - finished),
        wasted_executions=sum(data.work.get("wasted", {}).values()),
        decisions=decisions,
        dead_letters=dict(data.dead_letters),
        max_rss_mb=max((s.rss_mb for s in data.samples), default=0.0),
        overload_age_growth_s=growth,
        crm_incident_s=(data.crm_incident[1] - data.crm_incident[0]) if data.crm_incident else 0.0,
        crm_calls_during_incident=data.crm_calls_while_failing,
        crm_breaker_transitions=dict(data.breaker_transitions.get(_CRM_TOOL, {})),
        crm_breaker_timeline=breaker_timeline(data),
        runs_lost_to_crm=lost_to_crm(data),
        crm_retry_amplification_incident=amplification(
            data.crm_calls_while_failing, data.crm_first_calls_while_failing
        ),
        crm_retry_amplification_run=amplification(data.crm_calls, data.crm_first_calls),
        retries_total=data.retries,
        review_max_pending=data.review_max_pending,
        review_pending_peak=review.pending_peak,
        review_oldest_age_peak_s=review.oldest_age_peak_s,
        act_paused_by_review_s=review.act_paused_s,
        review_decisions=dict(data.review_decisions),
        escalations=escalations_by_reason(data.escalations),
        escalations_by_stage={
            f"{stage}: {reason}": n for (stage, reason), n in sorted(data.escalations.items())
        },
        level_seconds=levels.seconds,
        level_timeline=levels.timeline,
        levels_apart_s=levels.apart_s,
    )


def oldest_run_ages(data: RunData, step_s: float = 0.5) -> list[tuple[float, dict[str, float]]]:
    """Per time step, the age of the oldest admitted, unfinished run of each lane asked for
    (computed after the run from admissions and finishes, the same way for both modes)."""
    done_at: dict[str, float] = {
        c.run_id: c.done_ms / 1000 - data.started_wall for c in data.completions
    }
    for run_id, dead_ms in data.dead_run_ids.items():
        done_at.setdefault(run_id, dead_ms / 1000 - data.started_wall)
    runs = sorted(
        (t, lane, done_at.get(run_id, float("inf")))
        for run_id, (lane, t, _phase) in data.submissions.admitted.items()
    )
    horizon = data.phases[-1][2] if data.phases else 0.0
    out: list[tuple[float, dict[str, float]]] = []
    t = 0.0
    while t <= horizon:
        oldest: dict[str, float] = {"urgent": 0.0, "standard": 0.0, "background": 0.0}
        for admitted_t, lane, finished_t in runs:
            if admitted_t > t:
                break
            if finished_t > t and oldest[lane] == 0.0:
                oldest[lane] = t - admitted_t
        out.append((t, oldest))
        t += step_s
    return out
