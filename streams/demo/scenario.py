"""The demo's scripted scenario: phases of offered load and dependency health, and the
load generator that submits runs through the intake at the offered rate.

Owns the script (what happens when) and nothing else: the workflow, the intake and the
workers are the library as users run them.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.intake.requests import Decision, RunRequest
from streams.intake.service import Intake
from streams.types import Lane

#: The phase whose offered load meets a sick CRM (its writes fail).
INCIDENT = "CRM incident"


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    load_factor: float  # offered load as a multiple of the workflow's nominal capacity
    slowdown: float  # the sick dependency's latency multiplier
    # The CRM's write path fails from this many seconds into the phase, for this long:
    # flaky (each write fails with this probability) and slow (latency times this).
    crm_incident: tuple[float, float] | None = None
    crm_failure_rate: float = 0.7
    crm_slowdown: float = 4.0


@dataclass(frozen=True, slots=True)
class Scenario:
    phases: tuple[Phase, ...]
    nominal_capacity_per_s: float
    lane_mix: tuple[tuple[Lane, float], ...] = (
        ("urgent", 0.2),
        ("standard", 0.6),
        ("background", 0.2),
    )
    deadline_s: tuple[tuple[Lane, float], ...] = (
        ("urgent", 60),
        ("standard", 180),
        ("background", 600),
    )
    tenants: int = 5
    drain_s: float = 60.0

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def crm_incident_s(self) -> float:
        """How long the CRM fails in all (0: no incident)."""
        return sum(p.crm_incident[1] for p in self.phases if p.crm_incident is not None)

    def deadline_for(self, lane: Lane) -> float:
        return dict(self.deadline_s)[lane]


def full_scenario(capacity: float) -> Scenario:
    return Scenario(
        phases=(
            Phase("warm-up", 30, 0.6, 1.0),
            Phase("capacity probe", 10, 2.0, 1.0),
            Phase("dependency slow", 30, 0.6, 10.0),
            Phase("overload", 60, 3.0, 10.0),
            # Still 3x capacity, and the CRM's writes fail for 20 s: a phase of its own, so
            # the overload's numbers (goodput, queue ages) stay comparable without it.
            Phase(INCIDENT, 20, 3.0, 10.0, crm_incident=(0, 20)),
            Phase("recovery", 30, 0.6, 1.0),
        ),
        nominal_capacity_per_s=capacity,
        drain_s=60,  # ends once no admitted run is queued (people's backlog included)
    )


def quick_scenario(capacity: float) -> Scenario:
    return Scenario(
        phases=(
            Phase("warm-up", 5, 0.6, 1.0),
            Phase("capacity probe", 4, 2.0, 1.0),
            Phase("dependency slow", 3, 0.6, 10.0),
            Phase("overload", 16, 3.0, 10.0),
            # 20 s at the quick run's time scale (0.2); the breaker's open_s is real
            # seconds, so here it closes on its first probes, in the recovery phase.
            Phase(INCIDENT, 4, 3.0, 10.0, crm_incident=(0, 4)),
            Phase("recovery", 3, 0.6, 1.0),
        ),
        nominal_capacity_per_s=capacity,
        deadline_s=(("urgent", 20), ("standard", 60), ("background", 120)),
        # Admitted runs (the intake's bound) plus people's backlog at the review stage:
        # 40 s was just enough before the review stage; the drain ends once none is queued.
        drain_s=50,
    )


@dataclass
class Submissions:
    """What the load generator offered and what the intake answered, per phase."""

    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (lane, outcome)
    by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    admitted: dict[str, tuple[Lane, float, str]] = field(
        default_factory=dict
    )  # run -> lane, t, phase
    deadlines: dict[str, int] = field(default_factory=dict)  # run -> the caller's deadline
    errors: int = 0
    # (whole second since start, outcome) -> answers: what the intake said over time.
    per_second: Counter[tuple[int, str]] = field(default_factory=Counter)

    def note(self, phase: str, lane: Lane, decision: Decision, at: float, deadline_ms: int) -> None:
        self.decisions[(lane, decision.outcome)] += 1
        self.by_phase.setdefault(phase, Counter())[decision.outcome] += 1
        self.per_second[(int(at), decision.outcome)] += 1
        if decision.outcome in ("accepted", "delayed", "downgraded") and decision.run_id:
            # The lane the caller asked for: what the report groups by in both runs.
            self.admitted[decision.run_id] = (lane, at, phase)
            self.deadlines[decision.run_id] = deadline_ms


async def offer_load(
    intake: Intake,
    scenario: Scenario,
    *,
    on_phase: Callable[[Phase], None],
    started_at: float,
    send_deadlines: bool = True,
    one_queue: bool = False,
    seed: int = 7,
    out: Submissions | None = None,
) -> Submissions:
    """Submit runs at each phase's offered rate (Poisson arrivals), concurrently. Every run
    has a deadline; send_deadlines=False keeps it from the system (the naive run cannot
    act on it) while the report still judges goodput by it. one_queue=True sends every run
    on the standard lane: a plain consumer loop has one queue, urgent or not."""
    rng = random.Random(seed)
    out = out if out is not None else Submissions()
    lanes = [lane for lane, _ in scenario.lane_mix]
    weights = [w for _, w in scenario.lane_mix]
    pending: set[asyncio.Task[None]] = set()

    async def submit(phase: str, lane: Lane, tenant: str, n: int) -> None:
        deadline_ms = int((time.time() + scenario.deadline_for(lane)) * 1000)
        # The caller's deadline also rides in the payload, so the work ledger can tell wasted
        # work in the naive run too, where the system is not told of deadlines.
        payload = json.dumps(
            {"ticket": n, "subject": f"ticket {n} from {tenant}", "due_ms": deadline_ms}
        ).encode()
        sent = deadline_ms if send_deadlines else None
        try:
            decision = await intake.asubmit(
                RunRequest(
                    tenant=tenant,
                    payload=payload,
                    lane="standard" if one_queue else lane,
                    deadline_ms=sent,
                )
            )
        except Exception:  # a broker hiccup is a failed submission, counted, not a crash
            out.errors += 1
            return
        out.note(phase, lane, decision, time.monotonic() - started_at, deadline_ms)

    n = 0
    for phase in scenario.phases:
        on_phase(phase)
        rate = phase.load_factor * scenario.nominal_capacity_per_s
        end = time.monotonic() + phase.seconds
        next_at = time.monotonic()
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            lane = rng.choices(lanes, weights)[0]
            tenant = f"tenant-{rng.randrange(scenario.tenants)}"
            task = asyncio.create_task(submit(phase.name, lane, tenant, n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            next_at += rng.expovariate(rate)
    if pending:
        await asyncio.gather(*pending)
    return out
