"""The demo's CRM incident without a broker: the simulated CRM fails its writes for the
incident's span and counts the calls it got meanwhile; the naive variant of the triage
workflow declares no tools (its handlers call the CRM directly); the summary counts the
runs lost to the incident and the breaker's course from the samples; retry amplification,
the review queue's course and escalations by reason; the naive handlers' plain retry loop
and the finish handler that reads the reviewer's decision."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import cast

import pytest
import yaml

from streams.demo.run import TRIAGE, RunData, Sample, naive_variant
from streams.demo.scenario import INCIDENT, full_scenario, quick_scenario
from streams.demo.summary import (
    amplification,
    breaker_timeline,
    escalations_by_reason,
    lost_to_crm,
    review_course,
)
from streams.events import TaskEvent, new_task_event
from streams.runtime.context import HandlerContext
from streams.topology import parse_topology
from streams.types import Record
from topology import sim, triage_handlers
from topology.sim import CRM, CRMUnavailable

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fast_world() -> Iterator[None]:
    sim.configure(time_scale=0.01, seed=1)
    yield
    sim.configure(time_scale=1.0)


async def _write(crm: CRM, key: str) -> str:
    return await crm.write("t1", {"action": "reply"}, idempotency_key=key)


def test_writes_fail_only_during_the_incident_and_are_counted() -> None:
    crm = CRM(rate_per_s=1000, burst=100)
    now = time.monotonic()
    crm.fail_between(now, now + 0.3)

    async def scenario() -> None:
        with pytest.raises(CRMUnavailable):
            await _write(crm, "a")
        with pytest.raises(CRMUnavailable):
            await _write(crm, "a")  # a failed write is not remembered: tried again, fails
        assert await crm.read("t1")  # reads keep working
        await asyncio.sleep(0.35)
        assert (await _write(crm, "a")).startswith("crm-t1-")

    asyncio.run(scenario())
    assert crm.calls_while_failing == 2
    assert crm.write_calls == 3
    assert crm.writes_total == 1


def test_an_incident_needs_a_span() -> None:
    with pytest.raises(ValueError, match="end > start"):
        CRM().fail_between(5.0, 5.0)


def test_naive_variant_drops_every_tool() -> None:
    data = yaml.safe_load(TRIAGE.read_text())
    assert data["tools"]["crm_write"]["rate"] == 40  # governed: the pacing is streams'
    assert data["stages"]["act"]["tools"] == ["crm_write"]
    naive = naive_variant(data)
    assert "tools" not in naive
    assert all("tools" not in stage for stage in naive["stages"].values())
    assert data["stages"]["act"]["tools"] == ["crm_write"]  # the original is left alone


def test_the_incident_follows_the_overload_at_its_load() -> None:
    for scenario, seconds in ((full_scenario(40), 20), (quick_scenario(40), 4)):
        names = [p.name for p in scenario.phases]
        overload, incident = scenario.phases[names.index("overload") : names.index(INCIDENT) + 1]
        assert incident.load_factor == overload.load_factor
        assert incident.crm_incident == (0, seconds)
        assert scenario.crm_incident_s == seconds


def _sample(t: float, state: str | None) -> Sample:
    return Sample(
        t, "overload", {}, {}, {}, 0.0, 0,
        tools={} if state is None else {"crm_write": state},
    )  # fmt: skip


def test_summary_counts_runs_lost_to_the_crm_and_the_breaker_course() -> None:
    data = RunData("governed", "w", 0.0)
    data.letters = Counter(
        {
            ("act", "handler_error", "topology.sim.CRMUnavailable"): 7,
            ("act", "tool_unavailable", "streams.errors.ToolUnavailable"): 3,
            ("act", "expired", ""): 5,  # the caller's deadline: expiry, not the CRM
            ("act", "tool_saturated", "streams.errors.ToolSaturated"): 4,  # no token in time
            ("plan", "handler_error", "topology.sim.DependencyError"): 2,  # the LLM's
        }
    )
    assert lost_to_crm(data) == 10
    states = ["closed", "closed", "open", "open", "half_open", "closed", None]
    data.samples = [_sample(i * 0.5, s) for i, s in enumerate(states)]
    assert breaker_timeline(data) == [(0.0, "closed"), (1.0, "open"), (2.0, "half_open"),
                                      (2.5, "closed")]  # fmt: skip


def test_amplification_is_calls_per_first_attempt() -> None:
    assert amplification(0, 0) is None  # nothing was tried: nothing to amplify
    assert amplification(10, 10) == 1.0
    assert amplification(30, 10) == 3.0


def _review_sample(t: float, pending: int, age: float, act_paused: int = 0) -> Sample:
    return Sample(
        t, "overload", {}, {}, {}, 0.0, 0,
        review_pending=pending, review_oldest_age_s=age, act_paused_by_review=act_paused,
    )  # fmt: skip


def test_review_course_peaks_and_time_the_full_queue_held_act() -> None:
    samples = [
        _review_sample(0.0, 0, 0.0),
        _review_sample(0.5, 10, 2.0),
        _review_sample(1.0, 24, 6.5, act_paused=6),  # full: act paused
        _review_sample(1.5, 24, 7.0, act_paused=6),
        _review_sample(2.0, 12, 3.0),
    ]
    course = review_course(samples)
    assert (course.pending_peak, course.oldest_age_peak_s) == (24, 7.0)
    assert course.act_paused_s == pytest.approx(1.0)
    empty = review_course([])
    assert (empty.pending_peak, empty.act_paused_s) == (0, 0.0)


def test_escalations_are_counted_by_reason_across_stages() -> None:
    counts = Counter(
        {("approve", "escalated"): 4, ("act", "retries_exhausted"): 2, ("plan", "escalated"): 1}
    )
    assert escalations_by_reason(counts) == {"escalated": 5, "retries_exhausted": 2}


def test_governed_retries_and_reviews_naive_does_neither_with_a_bound() -> None:
    data = yaml.safe_load(TRIAGE.read_text())
    governed = parse_topology(data, str(TRIAGE))
    assert governed.stages["act"].retry is not None
    review = governed.stages["approve"].review
    assert review is not None and review.max_pending == 96
    naive = naive_variant(data)
    assert "retry" not in naive and all("retry" not in s for s in naive["stages"].values())
    topology = parse_topology(naive, str(TRIAGE))
    assert topology.stages["act"].retry is None
    review = topology.stages["approve"].review
    assert review is not None and review.max_pending >= 100_000


def test_the_plain_loop_tries_again_at_once_up_to_three_times() -> None:
    calls: list[float] = []

    async def failing(fail_first: int) -> str:
        calls.append(time.monotonic())
        if len(calls) <= fail_first:
            raise CRMUnavailable("503")
        return "ok"

    with pytest.raises(CRMUnavailable):
        asyncio.run(triage_handlers.call_plainly(failing, 10))
    assert len(calls) == triage_handlers.NAIVE_TRIES == 3
    assert calls[-1] - calls[0] < 0.05  # at once: no backoff
    calls.clear()
    assert asyncio.run(triage_handlers.call_plainly(failing, 1)) == "ok"
    assert len(calls) == 2


class _Ctx:
    """What finish uses of a HandlerContext."""

    def __init__(self, headers: tuple[tuple[str, bytes], ...]) -> None:
        self.stage = "finish"
        self.record = Record("triage.finish.standard", 0, 0, None, None, 0, headers)
        self.emitted: list[TaskEvent] = []

    def emit(self, event: TaskEvent) -> None:
        self.emitted.append(event)


def _pending_refund() -> TaskEvent:
    payload = b'{"ticket": 1, "subject": "s", "status": "pending_approval"}'
    return new_task_event(
        workflow="triage", stage="finish", tenant="t", lane="standard", payload=payload,
        now_ms=0, deadline_ms=10**13,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("decision", "status"), [(b"approve", "approved"), (b"decline", "pending_approval")]
)
def test_finish_records_the_reviewers_decision_and_drops_the_deadline(
    decision: bytes, status: str
) -> None:
    ctx = _Ctx((("streams.review.decision", decision), ("streams.review.by", b"reviewer-1")))
    asyncio.run(triage_handlers.finish(_pending_refund(), cast(HandlerContext, ctx)))
    [done] = ctx.emitted
    ticket = json.loads(done.payload)
    assert (ticket["status"], ticket["reviewed_by"]) == (status, "reviewer-1")
    assert done.deadline_ms is None and ticket["deadline_ms"] == 10**13
