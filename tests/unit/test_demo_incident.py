"""The demo's CRM incident without a broker: the simulated CRM fails its writes for the
incident's span and counts the calls it got meanwhile; the naive variant of the triage
workflow declares no tools (its handlers call the CRM directly); the summary counts the
runs lost to the incident and the breaker's course from the samples."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import yaml

from streams.demo.run import TRIAGE, RunData, Sample, naive_variant
from streams.demo.scenario import INCIDENT, full_scenario, quick_scenario
from streams.demo.summary import breaker_timeline, lost_to_crm
from topology import sim
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
