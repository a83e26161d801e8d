"""The triage workflow's simulated dependencies: latency, time scale, rate limits,
idempotent writes and the work ledger. Fast: a shrunk time scale keeps sleeps short."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from streams.events import TaskEvent, new_task_event
from topology import sim
from topology.sim import CRM, LatencyModel, ReviewerPool, SimulatedLLM, WorkLedger

PROMPT = "x" * 1000  # the LLM's reference size: no length factor


@pytest.fixture(autouse=True)
def real_time() -> Iterator[None]:
    sim.configure(time_scale=1.0, seed=1234)
    yield
    sim.configure(time_scale=1.0)


def test_lognormal_median_matches_the_model() -> None:
    model = LatencyModel(median_s=1.5, sigma=0.5)
    samples = [model.sample() for _ in range(20_000)]
    assert statistics.median(samples) == pytest.approx(1.5, rel=0.03)
    assert statistics.mean(samples) > 1.5  # right-skewed, like real service times


def test_time_scale_and_slowdown_multiply_llm_latency() -> None:
    llm = SimulatedLLM(median_s=1.5, sigma=0.5)
    base = llm.latency_s(PROMPT)
    sim.configure(time_scale=0.2, seed=1234)  # same draw, 5x faster world
    llm.set_slowdown(10)
    assert llm.latency_s(PROMPT) == pytest.approx(base * 0.2 * 10)


def test_shorter_prompts_are_faster() -> None:
    llm = SimulatedLLM(sigma=0.0)
    assert llm.latency_s("short") < 0.6 * llm.latency_s(PROMPT)


def test_llm_sleeps_its_scaled_latency_and_answers_a_choice() -> None:
    sim.configure(time_scale=0.01)
    llm = SimulatedLLM(median_s=5.0, sigma=0.0, failure_rate=0.0)
    llm.set_slowdown(2)
    started = time.monotonic()
    reply = asyncio.run(llm.complete(PROMPT + "\nAnswer with one of: reply, refund, escalate."))
    assert 0.09 <= time.monotonic() - started < 0.5  # 5 s x 2 x 0.01
    assert reply in ("reply", "refund", "escalate")


def test_llm_fails_at_its_failure_rate() -> None:
    sim.configure(time_scale=1e-6)
    llm = SimulatedLLM(failure_rate=0.2)

    async def call() -> bool:
        try:
            await llm.complete("hi")
        except sim.DependencyError:
            return False
        return True

    async def run() -> list[bool]:
        return await asyncio.gather(*(call() for _ in range(2000)))

    failures = asyncio.run(run()).count(False)
    assert failures == pytest.approx(400, abs=80)


@pytest.mark.parametrize(("scale", "rate"), [(1.0, 1000.0), (0.1, 100.0)])
def test_crm_write_rate_is_limited(scale: float, rate: float) -> None:
    # 1000 writes/s either way: 100/s in a 10x faster world.
    sim.configure(time_scale=scale)
    crm = CRM(rate_per_s=rate, burst=10, write_median_s=1e-4, sigma=0.0)

    async def run() -> None:
        await asyncio.gather(*(crm.write("t", {}, f"key-{i}") for i in range(200)))

    started = time.monotonic()
    asyncio.run(run())
    # 10 writes from the burst, then 190 at one per millisecond.
    assert time.monotonic() - started >= 0.185
    assert crm.writes_total == 200


def test_crm_bucket_is_shared_across_event_loops() -> None:
    crm = CRM(rate_per_s=1000.0, burst=10, write_median_s=1e-4, sigma=0.0)

    def worker(n: int) -> None:
        async def run() -> None:
            await asyncio.gather(*(crm.write("t", {}, f"{n}-{i}") for i in range(100)))

        asyncio.run(run())

    # Two workers, each with its own event loop thread, share one CRM.
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 0.185
    assert crm.writes_total == 200


def test_crm_writes_are_idempotent_by_key() -> None:
    crm = CRM(rate_per_s=1000.0, write_median_s=1e-3, sigma=0.0)

    async def run() -> list[str]:
        first = await crm.write("t-1", {"action": "refund"}, "run-1:act")
        # Two more with the same key: one after, one racing a new key's first write.
        again = await crm.write("t-1", {"action": "refund"}, "run-1:act")
        racing = await asyncio.gather(
            crm.write("t-2", {}, "run-2:act"), crm.write("t-2", {}, "run-2:act")
        )
        return [first, again, *racing]

    first, again, race_a, race_b = asyncio.run(run())
    assert first == again
    assert race_a == race_b
    assert crm.writes_total == 2
    assert crm.duplicate_writes_avoided == 2


def test_crm_forgets_the_oldest_keys_beyond_its_bound() -> None:
    crm = CRM(rate_per_s=1000.0, write_median_s=1e-4, sigma=0.0, remembered_keys=2)

    async def run() -> None:
        for key in ("a", "b", "c", "a"):
            await crm.write("t", {}, key)

    asyncio.run(run())
    assert crm.writes_total == 4  # "a" was forgotten when "c" arrived


def test_reviewers_take_a_persons_time_and_only_flagged_runs_need_one() -> None:
    pool = ReviewerPool(people=3, median_s=2.0, sigma=0.0)
    assert pool.decision_s() == pytest.approx(2.0)
    assert pool.clear_rate_per_s == pytest.approx(1.5)  # 3 people, 2 s each
    sim.configure(time_scale=0.2)
    assert pool.decision_s() == pytest.approx(0.4)  # the simulated world's time, scaled
    assert pool.needs_person(b'{"status": "pending_approval"}')
    assert not pool.needs_person(b'{"status": "done"}')
    assert pool.needs_person(b"not json")  # what the rule cannot read, a person looks at
    with pytest.raises(ValueError, match="at least one reviewer"):
        ReviewerPool(people=0)


def test_a_flaky_slow_incident_fails_some_writes_and_slows_all() -> None:
    sim.configure(time_scale=0.01)
    crm = CRM(rate_per_s=1e6, burst=1000, write_median_s=1.0, sigma=0.0)
    now = time.monotonic()
    crm.fail_between(now, now + 60, failure_rate=0.5, slowdown=4.0)

    async def run() -> list[bool]:
        async def one(i: int) -> bool:
            try:
                await crm.write("t", {}, f"k{i}")
            except sim.CRMUnavailable:
                return False
            return True

        return await asyncio.gather(*(one(i) for i in range(400)))

    started = time.monotonic()
    ok = asyncio.run(run())
    assert 0.04 * 0.9 <= time.monotonic() - started < 0.5  # 1 s x 4 x 0.01, concurrently
    assert 150 <= ok.count(False) <= 250  # about half
    assert crm.calls_while_failing == 400 and crm.writes_total == ok.count(True)
    with pytest.raises(ValueError, match="failure_rate"):
        crm.fail_between(0, 1, failure_rate=0.0)


def test_crm_counts_first_attempts_by_idempotency_key() -> None:
    crm = CRM(rate_per_s=1e6, burst=1000, write_median_s=1e-4, sigma=0.0)
    now = time.monotonic()
    crm.fail_between(now, now + 0.2)

    async def run() -> None:
        for _ in range(3):  # one run's write, tried three times while the CRM fails
            with pytest.raises(sim.CRMUnavailable):
                await crm.write("t", {}, "run-1:act")
        with pytest.raises(sim.CRMUnavailable):
            await crm.write("t", {}, "run-2:act")
        await asyncio.sleep(0.25)
        await crm.write("t", {}, "run-1:act")  # its retry after the incident succeeds
        await crm.write("t", {}, "run-3:act")

    asyncio.run(run())
    assert (crm.calls_while_failing, crm.first_calls_while_failing) == (4, 2)
    assert (crm.write_calls, crm.first_calls) == (6, 3)


def test_ledger_counts_waste_only_past_the_deadline() -> None:
    ledger = WorkLedger()

    def event(deadline_ms: int | None) -> TaskEvent:
        return new_task_event(
            workflow="triage",
            stage="plan",
            tenant="acme",
            lane="standard",
            payload=b"{}",
            now_ms=0,
            deadline_ms=deadline_ms,
        )

    assert not ledger.record("plan", event(2000), now_ms=1000)
    assert not ledger.record("plan", event(None), now_ms=1000)
    assert not ledger.record("act", event(1000), now_ms=1000)  # at the deadline: still on time
    assert ledger.record("act", event(1000), now_ms=1001)
    assert ledger.snapshot() == {"executions": {"plan": 2, "act": 2}, "wasted": {"act": 1}}


def test_deps_reset_restores_defaults() -> None:
    sim.deps.llm.set_slowdown(10)
    sim.deps.configure(crm=CRM(rate_per_s=5.0))
    sim.deps.reset()
    assert sim.deps.llm.slowdown == 1.0
    assert sim.deps.crm.bucket.rate_per_s == 40.0
    assert sim.deps.snapshot()["executions"] == {}
