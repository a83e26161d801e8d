"""One run of the demo scenario, governed or naive, on one broker: start the workflow's
workers and its intake, offer the load, sample what happens, drain, collect the outcome.

Owns the wiring of one run and the raw data it yields; the report reads that data.
"""

from __future__ import annotations

import asyncio
import copy
import resource
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from streams.escalations import EscalationCodec
from streams.events import TaskEventCodec
from streams.intake.service import Intake
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.review import ReviewDesk, review_worker
from streams.runtime.degradation import ladder_of
from streams.runtime.heap import freeze_startup_heap, thaw_heap
from streams.runtime.options import WorkerOptions
from streams.runtime.tools import ToolRegistry
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, read_dead_letters, read_records
from streams.topology import Topology, parse_topology

from .reviewers import Reviewers
from .scenario import Phase, Scenario, Submissions, offer_load

#: governed: every control; naive: none; unladdered: governed without the degradation
#: ladder (the comparison that shows what the ladder adds).
Mode = Literal["governed", "naive", "unladdered"]
TRIAGE = Path(__file__).resolve().parents[2] / "topology" / "triage.yaml"
_HUGE = 1_000_000_000
#: The stage after the bottleneck (act, the CRM writes): its input is act's output.
BOTTLENECK_NEXT_STAGE = "approve"
#: The naive review queue's "bound": more runs than either run admits.
_UNBOUNDED_REVIEWS = 100_000


@dataclass(frozen=True, slots=True)
class StageLoad:
    """One stage's worker at a sample: what it is doing and what holds it."""

    in_flight: int  # handler calls running
    lag: int  # records in its input topics past its committed offsets
    paused: dict[str, int]  # pause reason -> partitions paused for it
    pause_reason: str = ""  # the last stage-wide pause verdict ("" when fetching)


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    phase: str
    oldest_age_s: dict[str, float]
    queued: dict[str, int]
    stage_ages: dict[str, dict[str, float]]  # stage -> lane -> oldest queued age (s)
    rss_mb: float
    bottleneck_done: int  # the bottleneck dependency's completed calls so far
    tools: dict[str, str] = field(default_factory=dict)  # tool -> breaker state (governed)
    crm_calls: int = 0  # CRM writes that reached it so far, answered or failed
    crm_calls_failed: int = 0  # of them, those made while it was failing
    crm_first_calls: int = 0  # of crm_calls, first attempts (a run's first write)
    review_pending: int = 0  # the approve stage's pending reviews (W.reviews)
    review_oldest_age_s: float = 0.0  # its oldest pending review's age
    act_paused_by_review: int = 0  # act's partitions paused because approve was full
    act_pause_reason: str = ""  # why act is paused stage-wide ("" when it is not)
    # Every foreground stage's worker: the bottleneck's timeline next to the pauses.
    stages: dict[str, StageLoad] = field(default_factory=dict)
    level: str = "normal"  # the degradation level the intake acts on
    levels: dict[str, str] = field(default_factory=dict)  # stage -> level its worker acts on


@dataclass(frozen=True, slots=True)
class Completion:
    run_id: str
    lane: str
    created_ms: int
    done_ms: int
    deadline_ms: int | None


@dataclass
class RunData:
    mode: Mode
    workflow: str
    started_wall: float
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # name, start, end
    samples: list[Sample] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    # run -> when the bottleneck's stage (act) handed it on (ms): the latest record of it in
    # the next stage's input topics, so goodput can be counted where the capacity is.
    bottleneck_done_ms: dict[str, int] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_run_ids: dict[str, int] = field(default_factory=dict)  # run -> dead-lettered at (ms)
    submissions: Submissions = field(default_factory=Submissions)
    work: dict[str, Any] = field(default_factory=dict)
    deadlines: dict[str, int] = field(default_factory=dict)
    max_queue_age_s: dict[str, float] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)  # stage -> handler slots
    tool_rates: dict[str, float] = field(default_factory=dict)  # tool -> its declared rate/s
    worker_errors: dict[str, str] = field(default_factory=dict)
    waits: list[tuple[int, str, str, float]] = field(default_factory=list)
    # The CRM incident: when (seconds since start), and what it cost.
    crm_incident: tuple[float, float] | None = None
    crm_calls_while_failing: int = 0
    breaker_transitions: dict[str, dict[str, int]] = field(default_factory=dict)  # tool ->
    # Dead letters by (stage, reason, error type): which were lost to what.
    letters: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    crm_first_calls_while_failing: int = 0  # first attempts among crm_calls_while_failing
    crm_calls: int = 0  # every write that reached the CRM in the run
    crm_first_calls: int = 0
    escalations: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason)
    escalated_run_ids: set[str] = field(default_factory=set)
    retries: int = 0  # records written to the retry tiers
    review_max_pending: int = 0
    review_decisions: Counter[str] = field(default_factory=Counter)  # person, rule, too_late
    ladder: list[str] = field(default_factory=list)  # the degradation levels, base first


def load_triage(mode: Mode, source: Path = TRIAGE, *, time_scale: float = 1.0) -> Topology:
    """The triage workflow under a fresh name; naive mode switches every control off,
    unladdered only the degradation ladder. A quick run (time_scale < 1) dwells at a level
    for its share of min_dwell_s, as its phases are that share of the full demo's."""
    data = yaml.safe_load(source.read_text())
    data["workflow"] = f"triage-{mode[:3]}-{uuid.uuid4().hex[:6]}"
    if mode == "naive":
        data = naive_variant(data)
    elif mode == "unladdered":
        data.pop("degradation", None)
    ladder = data.get("degradation")
    if ladder and "min_dwell_s" in ladder:
        ladder["min_dwell_s"] = float(ladder["min_dwell_s"]) * time_scale
    return parse_topology(data, str(source))


def naive_variant(data: dict[str, Any]) -> dict[str, Any]:
    """What a plain consumer loop does: accept everything, never pause, never expire, and
    call its dependencies directly (no tools: no ceilings, no breakers; the handlers see
    a stage without tools, call the client as it is and, failed, again at once: up to 3
    tries, topology/triage_handlers.py). No retry policy (no tiers, no budgets, nothing
    escalated), and the review queue has no bound: every run waits for a person."""
    data = copy.deepcopy(data)
    data.pop("tools", None)
    data.pop("retry", None)
    data.pop("degradation", None)  # a plain loop does not degrade on purpose
    intake = data.setdefault("intake", {}) or {}
    intake.update(
        {"max_queued_runs": _HUGE, "max_queued_per_tenant": _HUGE, "saturation_ratio": 1.0,
         "pressure_saturation_ratio": 1.0}
    )  # fmt: skip
    intake.pop("tenants", None)
    data["intake"] = intake
    for stage in data["stages"].values():
        stage.pop("tools", None)
        stage.pop("retry", None)
        if stage.get("kind") == "review":
            stage["review"] = {"max_pending": _UNBOUNDED_REVIEWS, "max_wait_s": _HUGE}
        stage["max_queue_age_s"] = _HUGE
        stage["max_lag"] = _HUGE
        stage["partition_buffer"] = max(int(stage.get("partition_buffer", 100)), 5000)
        stage.pop("partition_resume", None)
        if stage.get("downstream") or stage.get("yields_to"):
            stage["pressure"] = {
                "lag": {"pause": _HUGE, "resume": _HUGE - 1},
                "oldest_age_s": {"pause": _HUGE, "resume": _HUGE - 1},
            }
        else:
            stage.pop("pressure", None)
        stage["dead_letter_limit"] = {"max_ratio": 1.0, "window": 100, "min_records": 100,
                                      "max_consecutive": None}  # fmt: skip
    return data


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(
    mode: Mode,
    client: ClientConfig,
    scenario: Scenario,
    *,
    deps: Any,
    bottleneck_done: Callable[[], int],
    time_scale: float,
    on_tick: Callable[[RunData, Intake, list[StageWorker]], None] | None = None,
) -> RunData:
    topology = load_triage(mode, time_scale=time_scale)
    Admin(client).apply(
        TopicWanted(name, spec.partitions, spec.retention_ms, spec.compacted)
        for name, spec in topology.all_topics().items()
    )
    deps.reset()
    deps.configure(time_scale=time_scale)
    # The simulation scales rate limits with time too; the demo keeps the bottleneck at
    # its nominal rate at any time scale, so a quick run overloads the same workflow.
    deps.configure(crm=type(deps.crm)(rate_per_s=deps.crm.bucket.rate_per_s * time_scale))
    # People too: a reviewer takes the same real seconds per decision at any time scale.
    people = deps.reviewers
    deps.configure(
        reviewers=type(people)(people.people, people.latency.median_s / time_scale,
                               people.latency.sigma)
    )  # fmt: skip
    data = RunData(mode, topology.workflow, time.time())
    data.max_queue_age_s = {s.name: s.max_queue_age_s for s in topology.stages.values()}
    data.concurrency = {s.name: s.concurrency for s in topology.stages.values()}
    data.tool_rates = {
        name: t.rate_per_s for name, t in topology.tools.items() if t.rate_per_s is not None
    }
    data.ladder = [level.name for level in ladder_of(topology).levels]
    # The tools every worker of this workflow shares in this process (README "Tools"):
    # read for the breakers' state over time and their transitions.
    tools = ToolRegistry.for_process(topology)
    # The desk the simulated reviewers decide through; it reads W.reviews before any
    # worker starts, so a failure here leaves nothing running.
    desk = ReviewDesk(topology, client)
    # One worker per stage, each with a stable id (exactly-once stages fence by it).
    workers = [
        (review_worker if stage.review is not None else StageWorker)(
            topology,
            name,
            client,
            options=WorkerOptions(
                shutdown_grace_s=5.0, stall_after_s=60.0, worker_id=f"demo-{name}"
            ),
        )
        for name, stage in topology.stages.items()
    ]
    threads = [WorkerThread(w).start() for w in workers]
    intake = Intake(topology, client).start()
    review_stage, review_config = next(
        (n, s.review) for n, s in topology.stages.items() if s.review is not None
    )
    data.review_max_pending = review_config.max_pending
    reviewers = Reviewers(desk, deps.reviewers, stage=review_stage).start()
    act = next(w for w in workers if w.stage.name == _CRM_STAGE)
    # Full collections walking the set-up heap stopped every worker for 70-234 ms about
    # once a second (streams.runtime.heap); thawed in the finally below.
    freeze_startup_heap()
    started = time.monotonic()
    # The phases, samples and admissions count from here (monotonic); completions, act's
    # hand-offs and dead letters carry wall-clock times, counted from started_wall: both
    # must be this moment, or every figure taken from completions is over a window shifted
    # from its phase by the start-up above (measured: governed 5.4 s, naive 2.9 s).
    data.started_wall = time.time()
    current = ["starting"]
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            report = intake.capacity()
            [review] = [r for r in desk.stats() if r.stage == review_stage]
            # The counts next to their time: the readings below can wait on the workers'
            # locks for a tenth of a second, which over a short window reads as a rate.
            done, t = bottleneck_done(), time.monotonic() - started
            data.samples.append(
                Sample(
                    t=t,
                    phase=current[0],
                    oldest_age_s={str(k): v for k, v in report.oldest_queued_age_s.items()},
                    queued={str(k): v for k, v in report.queued_by_lane.items()},
                    stage_ages={
                        w.stage.name: {str(k): v for k, v in w.queue_ages().items()}
                        for w in workers
                        if not w.stage.background
                    },
                    rss_mb=_rss_mb(),
                    bottleneck_done=done,
                    tools={r.name: r.breaker for r in tools.readings() if r.breaker},
                    crm_calls=deps.crm.write_calls,
                    crm_calls_failed=deps.crm.calls_while_failing,
                    crm_first_calls=deps.crm.first_calls,
                    review_pending=review.pending,
                    review_oldest_age_s=review.oldest_pending_age_s,
                    act_paused_by_review=_paused_by(act, review_stage),
                    act_pause_reason=act.status().last_pause_reason,
                    stages={
                        w.stage.name: _stage_load(w) for w in workers if not w.stage.background
                    },
                    level=intake.degradation_feed.now().view.level,
                    levels={w.stage.name: w.degradation().view.level for w in workers},
                )
            )
            if on_tick is not None:
                on_tick(data, intake, workers)

    def enter(phase: Phase) -> None:
        now = time.monotonic() - started
        if data.phases:
            name, begin, _ = data.phases[-1]
            data.phases[-1] = (name, begin, now)
        data.phases.append((phase.name, now, now))
        current[0] = phase.name
        deps.llm.set_slowdown(phase.slowdown)
        if phase.crm_incident is not None:
            offset, seconds = phase.crm_incident
            at = time.monotonic() + offset
            deps.crm.fail_between(
                at, at + seconds, failure_rate=phase.crm_failure_rate,
                slowdown=phase.crm_slowdown,
            )  # fmt: skip
            data.crm_incident = (now + offset, now + offset + seconds)

    sampler = threading.Thread(target=sample, name="demo-sampler", daemon=True)
    sampler.start()
    try:
        asyncio.run(
            offer_load(
                intake, scenario, on_phase=enter, started_at=started,
                send_deadlines=mode != "naive", one_queue=mode == "naive",
                out=data.submissions,
            )
        )  # fmt: skip
        end_of_load = time.monotonic() - started
        name, begin, _ = data.phases[-1]
        data.phases[-1] = (name, begin, end_of_load)
        current[0] = "drain"
        deps.llm.set_slowdown(1.0)
        # The naive run's backlog outlives any drain window: a short look is enough there.
        drain_s = scenario.drain_s if mode != "naive" else min(scenario.drain_s, 10.0)
        drain_until = time.monotonic() + drain_s
        while (
            time.monotonic() < drain_until
            and intake.capacity().queued_by_lane
            and sum(intake.capacity().queued_by_lane.values())
        ):
            time.sleep(0.5)
        data.phases.append(("drain", end_of_load, time.monotonic() - started))
    finally:
        thaw_heap()
        stop_sampling.set()
        sampler.join(5)
        reviewers.close()
        desk.close()
        intake.close()
        for thread in threads:
            thread.stop()
            if thread.error is not None:
                data.worker_errors[thread.worker.stage.name] = repr(thread.error)
    _collect(data, topology, client)
    data.work = deps.ledger.snapshot()
    data.waits = deps.ledger.waits()
    data.deadlines = data.submissions.deadlines
    data.crm_calls_while_failing = deps.crm.calls_while_failing
    data.crm_first_calls_while_failing = deps.crm.first_calls_while_failing
    data.crm_calls = deps.crm.write_calls
    data.crm_first_calls = deps.crm.first_calls
    data.review_decisions = Counter(reviewers.decisions)
    data.breaker_transitions = {
        r.name: {f"{a}->{b}": n for (a, b), n in sorted(r.transitions.items(), key=_breaker_order)}
        for r in tools.readings()
        if r.breaker is not None
    }
    return data


#: The stage that writes to the CRM (its first attempts are the amplification's base).
_CRM_STAGE = "act"


def _paused_by(worker: StageWorker, stage: str) -> int:
    """Partitions of `worker` paused stage-wide because `stage` is saturated (a full review
    queue: "approve.saturated" among the verdict's reasons)."""
    status = worker.status()
    paused = status.paused_by_reason.get("downstream", 0)
    return paused if f"{stage}.saturated" in status.last_pause_reason else 0


def _stage_load(worker: StageWorker) -> StageLoad:
    status = worker.status()
    return StageLoad(
        in_flight=status.in_flight,
        lag=sum(status.lag_by_lane.values()),
        paused=dict(status.paused_by_reason),
        pause_reason=status.last_pause_reason,
    )


#: A breaker's transitions in the order a sick tool takes them.
_TRANSITIONS = ("closed->open", "open->half_open", "half_open->open", "half_open->closed")


def _breaker_order(item: tuple[tuple[str, str], int]) -> int:
    (old, new), _n = item
    name = f"{old}->{new}"
    return _TRANSITIONS.index(name) if name in _TRANSITIONS else len(_TRANSITIONS)


def _collect(data: RunData, topology: Topology, client: ClientConfig) -> None:
    codec = TaskEventCodec()
    parts = topology.topic_defaults.partitions
    for record in read_records(client, topology.completed_topic, parts, expect=10**9, timeout_s=3):
        if record.value is None:
            continue
        event = codec.decode(record.value)
        asked = data.submissions.admitted.get(event.run_id)
        data.completions.append(
            Completion(
                event.run_id, asked[0] if asked else event.lane, event.created_at_ms,
                record.timestamp_ms, data.submissions.deadlines.get(event.run_id),
            )
        )  # fmt: skip
    after_bottleneck = topology.stages[BOTTLENECK_NEXT_STAGE]
    for topic in after_bottleneck.input_topics:
        for record in read_records(client, topic, parts, expect=10**9, timeout_s=2):
            if record.value is None:
                continue
            run_id = codec.decode(record.value).run_id
            at = data.bottleneck_done_ms.get(run_id, 0)
            data.bottleneck_done_ms[run_id] = max(at, record.timestamp_ms)
    for letter in read_dead_letters(
        client, topology.dead_letter_topic, parts, expect=10**9, timeout_s=2
    ):
        data.dead_letters[letter.reason] += 1
        data.letters[(letter.stage, letter.reason, letter.error_type or "")] += 1
        if letter.original_key:
            run_id = letter.original_key.decode(errors="replace")
            data.dead_run_ids.setdefault(run_id, letter.dead_at_ms)
    if not topology.retry_topics:  # naive: no retry policy, no tiers, no escalations
        return
    escalations = EscalationCodec()
    for record in read_records(
        client, topology.escalations_topic, parts, expect=10**9, timeout_s=2
    ):
        if record.value is not None:
            escalation = escalations.decode(record.value)
            data.escalations[(escalation.stage, escalation.reason)] += 1
            data.escalated_run_ids.add(escalation.run_id)
    for topic in topology.retry_topics.values():
        data.retries += len(read_records(client, topic, parts, expect=10**9, timeout_s=1))
