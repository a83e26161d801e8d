"""Retries on Kafka against the real broker: a flaky handler recovers through a retry tier
with its attempts recorded; retries stay within the budget when every call fails; a retry
storm does not push the stage's input lag past its bound (invariant 7); a retry that would
be due after the run's deadline is expired at once, never handled."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from streams.clock import SystemClock
from streams.escalations import EscalationCodec
from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import LagReader
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.signals import Escalate, Retry
from streams.testing import WorkerThread, publish, read_dead_letters, read_events, read_records

from .process_helpers import TopicReader
from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FAST_RETRY: dict[str, Any] = {
    "tiers": [1, 3],
    "base_s": 0.2,
    "cap_s": 3,
    "retry_on": ["ConnectionError"],
    "budget": {"ratio": 1.0, "min_retries": 100},
}
NO_VALVE = {"max_ratio": 1.0, "max_consecutive": None}


def test_a_flaky_handler_recovers_on_retry_with_its_attempts_recorded(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"act": {"retry": FAST_RETRY}})
    sent = events(topology, "act", 20)
    calls: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    async def handler(event: Any, ctx: Any) -> None:
        with lock:
            calls[event.run_id, event.attempt] += 1
        if event.attempt == 0:
            raise ConnectionError("crm flaked")
        ctx.emit(event)

    publish(client_config, f"{topology.workflow}.act.standard", sent)
    worker = WorkerThread(StageWorker(topology, "act", client_config, handler=handler)).start()
    done = read_events(client_config, topology.completed_topic, 3, expect=20, timeout_s=30)
    tier = read_records(client_config, topology.retry_topics[1], 3, expect=20, timeout_s=5)
    worker.stop()
    assert worker.error is None
    assert sorted(e.run_id for e in done) == sorted(e.run_id for e in sent)
    assert all(calls[e.run_id, 0] == 1 and calls[e.run_id, 1] == 1 for e in sent), calls
    assert len(tier) == 20  # each failure went through the 1 s tier, none elsewhere
    codec = TaskEventCodec()
    assert {codec.decode(r.value or b"").attempt for r in tier} == {1}  # attempt recorded
    assert {dict(r.headers)["streams.reason"] for r in tier} == {b"handler_error"}
    # The retry kept the run's identity, idempotency key and trace context.
    by_run = {e.run_id: e for e in sent}
    for e in done:
        assert (e.idempotency_key, dict(e.trace_context).get("traceparent")) == (
            by_run[e.run_id].idempotency_key,
            dict(by_run[e.run_id].trace_context).get("traceparent"),
        )


def test_retries_never_exceed_the_budget_when_every_call_fails(
    admin: Admin, client_config: ClientConfig
) -> None:
    retry = {**FAST_RETRY, "max_attempts": 5, "budget": {"ratio": 0.1, "min_retries": 2}}
    topology = make_workflow(admin, {"act": {"retry": retry, "dead_letter_limit": NO_VALVE}})
    sent = events(topology, "act", 60)
    attempts: Counter[int] = Counter()
    lock = threading.Lock()

    async def handler(event: Any, ctx: Any) -> None:
        with lock:
            attempts[event.attempt] += 1
        raise ConnectionError("the dependency is down")

    publish(client_config, f"{topology.workflow}.act.standard", sent)
    worker = WorkerThread(StageWorker(topology, "act", client_config, handler=handler)).start()
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 3, expect=60, timeout_s=30)
    time.sleep(4)  # any retry still in a tier comes back and fails within this
    dead += read_dead_letters(client_config, topology.dead_letter_topic, 3, expect=61, timeout_s=1)
    worker.stop()
    assert worker.error is None
    retries = sum(n for attempt, n in attempts.items() if attempt > 0)
    assert attempts[0] == 60
    # 60 first attempts at ratio 0.1 allow 6 retries in the window (the floor is 2).
    assert 1 <= retries <= 6, attempts
    assert len({d.original_key for d in dead}) == 60  # every run ended in a dead letter
    reasons = Counter(d.reason for d in dead)
    assert reasons["retry_budget_exhausted"] >= 54, reasons
    assert set(reasons) <= {"retry_budget_exhausted", "handler_error"}


def test_a_retry_storm_does_not_push_the_input_lag_past_its_bound(
    admin: Admin, client_config: ClientConfig
) -> None:
    max_lag = 30
    stage = {"retry": {**FAST_RETRY, "tiers": [5]}, "max_lag": max_lag, "concurrency": 2}
    topology = make_workflow(admin, {"act": stage}, partitions=1)
    storm = events(topology, "act", max_lag, payload=b"fails-once")
    bulk = events(topology, "act", max_lag, payload=b"slow")

    async def handler(event: Any, ctx: Any) -> None:
        if event.payload == b"fails-once" and event.attempt == 0:
            raise Retry(after_s=4, reason="the dependency flaked")  # all due together
        await asyncio.sleep(0.3)
        ctx.emit(event)

    lag_reader = LagReader(Admin(client_config, timeout_s=5.0), SystemClock())
    options = WorkerOptions(pressure_refresh_s=0.25)
    worker = StageWorker(topology, "act", client_config, handler=handler, options=options)
    running = WorkerThread(worker).start()
    topic = f"{topology.workflow}.act.standard"
    act = topology.stages["act"]
    peak, held = 0, False
    with (
        TopicReader(client_config, topology.retry_topics[5], 1) as tier,
        TopicReader(client_config, topology.completed_topic, 1) as finished,
    ):
        publish(client_config, topic, storm)
        assert tier.wait_until(lambda r: len(r.records) >= max_lag, 20)
        # ...and their first attempts committed (else they would count in the peak).
        wait_until_s = time.monotonic() + 10
        while lag_reader.read(act.consumer_group, act.input_topics).total_lag > 0:
            assert time.monotonic() < wait_until_s, "the failed first attempts were not committed"
            time.sleep(0.1)
        # The storm waits in its tier; the stage's input fills to its bound with slow work
        # (6 a second) and the 30 retries come due while most of it still waits.
        publish(client_config, topic, bulk)
        bulk_at_ms = time.time() * 1000
        first_due_ms = min(int(dict(r.headers)["streams.retry.due_at_ms"]) for r in tier.records)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(finished.records) < 2 * max_lag:
            peak = max(peak, lag_reader.read(act.consumer_group, act.input_topics).total_lag)
            held = held or worker.retry_forwarder_holding == "stage_bound"
            finished.poll(0.1)
        done = {r.key for r in finished.records}
    running.stop()
    lag_reader.close()
    assert running.error is None
    assert done == {e.run_id.encode() for e in storm + bulk}
    # The premise: the bulk was in (and seen by a lag reading) before the retries came due.
    assert first_due_ms - bulk_at_ms >= 1000, first_due_ms - bulk_at_ms
    assert held  # due retries were held while the stage was at its bound...
    assert peak <= max_lag + 2, peak  # ...so they never piled on top of it (naive: ~50-60)


def test_a_retry_due_after_the_deadline_is_expired_at_once(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(
        admin, {"act": {"retry": {**FAST_RETRY, "cap_s": 30, "tiers": [5, 30]}}}
    )
    doomed = events(topology, "act", 5, deadline_in_s=4)
    calls: Counter[str] = Counter()

    async def handler(event: Any, ctx: Any) -> None:
        calls[event.run_id] += 1
        raise Retry(after_s=10, reason="come back later")

    publish(client_config, f"{topology.workflow}.act.standard", doomed)
    started = time.monotonic()
    worker = WorkerThread(StageWorker(topology, "act", client_config, handler=handler)).start()
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 3, expect=5, timeout_s=20)
    took = time.monotonic() - started
    tier = read_records(client_config, topology.retry_topics[30], 3, expect=1, timeout_s=1)
    worker.stop()
    assert worker.error is None
    assert sorted(d.original_key or b"" for d in dead) == sorted(e.run_id.encode() for e in doomed)
    assert {d.reason for d in dead} == {"expired"}
    assert all(d.attempts == 1 for d in dead)
    assert took < 10  # at once, not after the 10 s it asked for
    assert tier == []  # never written to a tier
    assert all(n == 1 for n in calls.values()) and len(calls) == 5


def test_escalations_go_to_their_topic_with_reason_and_event(
    admin: Admin, client_config: ClientConfig
) -> None:
    retry = {**FAST_RETRY, "max_attempts": 2, "on_exhausted": "escalate"}
    topology = make_workflow(admin, {"act": {"retry": retry}})
    asked = events(topology, "act", 3, payload=b"ask")
    failing = events(topology, "act", 3, payload=b"fail")

    async def handler(event: Any, ctx: Any) -> None:
        if event.payload == b"ask":
            raise Escalate("a person must approve this refund")
        raise ConnectionError("down")

    publish(client_config, f"{topology.workflow}.act.standard", asked + failing)
    worker = WorkerThread(StageWorker(topology, "act", client_config, handler=handler)).start()
    records = read_records(client_config, topology.escalations_topic, 3, expect=6, timeout_s=30)
    worker.stop()
    assert worker.error is None
    codec = EscalationCodec()
    escalations = {e.run_id: e for e in (codec.decode(r.value or b"") for r in records)}
    assert {r.key for r in records} == {e.run_id.encode() for e in asked + failing}
    for e in asked:
        got = escalations[e.run_id]
        assert (got.reason, got.note, got.attempts) == (
            "escalated",
            "a person must approve this refund",
            1,
        )
    for e in failing:
        got = escalations[e.run_id]
        assert (got.reason, got.attempts, got.error_type) == (
            "retries_exhausted",
            2,
            "ConnectionError",
        )
        assert got.event is not None and got.stage == "act"
