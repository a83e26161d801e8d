"""The demo's degradation ladder without a broker: triage.yaml declares it (the naive and
the unladdered variants drop it; a quick run dwells its share of min_dwell_s), the
handlers read its knobs (plan's short prompt, retrieve's fewer documents, act's wider
review of refunds), and the summary tells the level's course from the samples."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import cast

import pytest

from streams.demo.run import Sample, load_triage
from streams.demo.summary import level_course
from streams.events import TaskEvent, new_task_event
from streams.policy.degradation import LevelView
from streams.runtime.context import HandlerContext
from streams.runtime.degradation import ladder_of
from topology import sim, triage_handlers

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fast_world() -> Iterator[None]:
    sim.configure(time_scale=0.01, seed=1)
    sim.deps.reset()
    yield
    sim.configure(time_scale=1.0)


def _levels() -> dict[str, LevelView]:
    ladder = ladder_of(load_triage("governed"))
    return {level.name: ladder.view(i) for i, level in enumerate(ladder.levels)}


def test_triage_declares_a_ladder_that_naive_and_unladdered_drop() -> None:
    governed = ladder_of(load_triage("governed"))
    assert [level.name for level in governed.levels] == ["normal", "lean", "essential"]
    assert governed.min_dwell_s == 10
    assert ladder_of(load_triage("governed", time_scale=0.2)).min_dwell_s == pytest.approx(2)
    for mode in ("naive", "unladdered"):
        assert [level.name for level in ladder_of(load_triage(mode)).levels] == ["normal"]
    lean = _levels()["lean"]
    assert lean.pause_stages == {"enrich"}
    assert lean.intake_lanes == {"background": "reject"}
    essential = _levels()["essential"]
    assert essential.knob("retrieval_k") == 1 and essential.knob("prompt") == "short"


class _Ctx:
    """What the triage handlers use of a HandlerContext, at a degradation level."""

    def __init__(self, stage: str, degradation: LevelView) -> None:
        self.stage = stage
        self.lane = "standard"
        self.deadline_ms = int((time.time() + 3600) * 1000)  # no hurry
        self.tools = None  # call the simulated dependencies directly
        self.degradation = degradation
        self.emitted: list[TaskEvent] = []

    def emit(self, event: TaskEvent) -> None:
        self.emitted.append(event)


def _event(stage: str, **ticket: object) -> TaskEvent:
    payload = json.dumps({"ticket": 7, "subject": "charged twice", **ticket}).encode()
    return new_task_event(
        workflow="triage", stage=stage, tenant="t", lane="standard", payload=payload,
        now_ms=0, deadline_ms=10**13,
    )  # fmt: skip


def _run(handler: str, stage: str, level: str, **ticket: object) -> dict[str, object]:
    ctx = _Ctx(stage, _levels()[level])
    asyncio.run(
        getattr(triage_handlers, handler)(_event(stage, **ticket), cast(HandlerContext, ctx))
    )
    [out] = ctx.emitted
    result: dict[str, object] = json.loads(out.payload)
    return result


@pytest.mark.parametrize(("level", "prompt"), [("normal", "full"), ("lean", "short")])
def test_plan_uses_the_short_prompt_from_lean_on(level: str, prompt: str) -> None:
    assert _run("plan", "plan", level)["prompt"] == prompt


@pytest.mark.parametrize(("level", "docs"), [("normal", 3), ("lean", 2), ("essential", 1)])
def test_retrieve_asks_for_fewer_documents_up_the_ladder(level: str, docs: int) -> None:
    assert len(cast(list[str], _run("retrieve", "retrieve", level)["docs"])) == docs


@pytest.mark.parametrize(
    ("level", "tier", "status"),
    [
        ("normal", "enterprise", "pending_approval"),
        ("normal", "pro", "done"),
        ("lean", "pro", "done"),
        ("essential", "pro", "pending_approval"),
        ("essential", "free", "done"),
    ],
)
def test_act_sends_more_refunds_to_a_person_at_essential(
    level: str, tier: str, status: str
) -> None:
    ticket = {"action": "refund", "tier": tier, "docs": []}
    assert _run("act", "act", level, **ticket)["status"] == status


def _sample(t: float, level: str, **workers: str) -> Sample:
    return Sample(t, "overload", {}, {}, {}, 0.0, 0, level=level, levels=dict(workers))


def test_level_course_counts_time_at_each_level_its_changes_and_time_apart() -> None:
    samples = [
        _sample(0.0, "normal", plan="normal"),
        _sample(0.5, "normal", plan="normal"),
        _sample(1.0, "lean", plan="normal"),  # the intake saw it first: apart
        _sample(1.5, "lean", plan="lean"),
        _sample(2.0, "lean", plan="lean"),
        _sample(2.5, "normal", plan="normal"),
    ]
    course = level_course(samples)
    assert course.seconds == {"normal": 1.0, "lean": 1.5}
    assert course.timeline == [(0.0, "normal"), (1.0, "lean"), (2.5, "normal")]
    assert course.apart_s == 0.5
    assert level_course([]).timeline == []
