"""Human review as a stage, against the real broker: at most max_pending runs pending and
the stage before it paused while full, the on_timeout outcome after max_wait_s, an approve
over HTTP continuing the run downstream with the decision, and pending reviews (with their
original deadlines) surviving a worker restart."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.review import ReviewDesk, ReviewServer, review_worker
from streams.review.records import ReviewCodec
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_dead_letters, read_records
from streams.topology import Topology
from streams.types import Record

from .monitor_helpers import wait_for
from .process_helpers import start, workers
from .workflows import events, make_workflow

__all__ = ["workers"]  # the fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FAST = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.3, shutdown_grace_s=1.0)


def review_flow(admin: Admin, intake: dict[str, Any] | None = None, **review: Any) -> Topology:
    """draft -> approve (a review stage) -> send; nothing runs `send`: tests read its topic.
    `intake`: the topology's intake section (None: none)."""
    top: dict[str, Any] = {} if intake is None else {"intake": intake}
    return make_workflow(
        admin,
        {
            "draft": {"downstream": ["approve"]},
            "approve": {
                "kind": "review",
                "handler": None,
                "review": review,
                "downstream": ["send"],
            },
            "send": {},
        },
        **top,
    )


def sent(client: ClientConfig, topology: Topology, count: int) -> list[Record]:
    topic = topology.stages["send"].input_topics_by_lane["standard"]
    return read_records(client, topic, 3, expect=count, timeout_s=20)


def header(record: Record, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return None if value is None else value.decode()
    return None


def test_at_most_max_pending_wait_and_the_stage_before_pauses_while_full(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(admin, max_pending=3, max_wait_s=50, on_timeout="decline")
    desk = ReviewDesk(topology, client_config)
    try:
        draft = start(workers, StageWorker(topology, "draft", client_config, options=FAST))
        review = start(workers, review_worker(topology, "approve", client_config, options=FAST))
        publish(
            client_config,
            topology.stages["draft"].input_topics_by_lane["standard"],
            events(topology, "draft", 12),
        )
        wait_for(lambda: len(desk.pending()) == 3, 20, "3 pending reviews")
        wait_for(
            lambda: draft.status().paused_by_reason.get("downstream", 0) > 0, 10, "draft paused"
        )
        time.sleep(2.0)  # full for a while: still no more than max_pending pending
        pending = desk.pending()
        assert len(pending) == 3
        assert "approve.saturated" in draft.status().last_pause_reason
        labels = {"workflow": topology.workflow, "stage": "approve"}
        sample = review.registry.get_sample_value
        assert sample("streams_review_pending", labels) == 3
        assert sample("streams_review_max_pending", labels) == 3
        assert (sample("streams_review_oldest_pending_age_seconds", labels) or 0) >= 2.0
        assert sample("streams_review_clear_rate", labels) == 0.0  # nobody decided yet
        desk.decide(pending[0].run_id, "approve", note="fine", reviewer="ana")
        wait_for(lambda: pending[0].run_id not in {r.run_id for r in desk.pending()}, 10, "decided")
        wait_for(lambda: len(desk.pending()) == 3, 10, "the freed place taken")
        assert len(desk.pending()) == 3
        assert (sample("streams_review_clear_rate", labels) or 0) > 0
        decided = {"outcome": "approve", "by": "person", **labels}
        assert sample("streams_review_decisions_total", decided) == 1
    finally:
        desk.close()


def test_a_review_nobody_decides_in_max_wait_continues_declined(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(
        admin, max_pending=5, max_wait_s=2, on_timeout="decline", rate_window_s=1
    )
    start(workers, review_worker(topology, "approve", client_config, options=FAST))
    [event] = events(topology, "approve", 1)
    publish(client_config, topology.stages["approve"].input_topics_by_lane["standard"], [event])
    [record] = sent(client_config, topology, 1)
    assert record.key == event.run_id.encode()
    assert header(record, "streams.review.decision") == "decline"
    assert header(record, "streams.review.by") == "timeout"
    # W.reviews: parked, timed out, then (the run moved on, rate_window_s passed) a tombstone.
    history = read_records(client_config, topology.reviews_topic, 1, expect=3, timeout_s=15)
    codec = ReviewCodec()
    states = [None if r.value is None else codec.decode(r.value).state for r in history]
    assert states == ["pending", "timed_out", None]
    assert {r.key for r in history} == {event.run_id.encode()}


def test_approve_over_http_continues_the_run_with_the_decision(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(admin, max_pending=5, max_wait_s=40, on_timeout="decline")
    start(workers, review_worker(topology, "approve", client_config, options=FAST))
    server = ReviewServer(topology, client_config, host="127.0.0.1", port=0).start()
    try:
        [event] = events(topology, "approve", 1, payload=b'{"ticket": 7}')
        publish(client_config, topology.stages["approve"].input_topics_by_lane["standard"], [event])
        url = f"{server.url}/v1/workflows/{topology.workflow}/reviews"

        def listed() -> list[dict[str, Any]]:
            with urllib.request.urlopen(url, timeout=5) as response:
                return list(json.load(response)["reviews"])

        wait_for(lambda: len(listed()) == 1, 20, "the review listed over HTTP")
        [shown] = listed()
        assert shown["run_id"] == event.run_id and shown["payload"] == '{"ticket": 7}'
        body = json.dumps({"decision": "approve", "note": "looks right", "reviewer": "ana"})
        request = urllib.request.Request(
            f"{url}/{event.run_id}", data=body.encode(), method="POST",
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert json.load(response)["state"] == "approved"
        [record] = sent(client_config, topology, 1)
        assert header(record, "streams.review.decision") == "approve"
        assert header(record, "streams.review.note") == "looks right"
        assert header(record, "streams.review.by") == "ana"
        wait_for(lambda: listed() == [], 10, "the decided review gone from the list")
    finally:
        server.close()


def test_pending_reviews_survive_a_worker_restart_with_their_deadlines(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(admin, max_pending=5, max_wait_s=40, on_timeout="decline")
    # The default shutdown grace (30 s): parked reviews must not hold a stopping worker.
    slow_stop = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.3)
    first = WorkerThread(review_worker(topology, "approve", client_config, options=slow_stop))
    first.start()
    runs = events(topology, "approve", 2)
    publish(client_config, topology.stages["approve"].input_topics_by_lane["standard"], runs)
    desk = ReviewDesk(topology, client_config)
    try:
        wait_for(lambda: len(desk.pending()) == 2, 20, "2 pending reviews")
        deadlines = {r.run_id: r.deadline_ms for r in desk.pending()}
        stopping = time.monotonic()
        first.stop()
        assert time.monotonic() - stopping < 8.0
        time.sleep(1.0)
        start(workers, review_worker(topology, "approve", client_config, options=FAST))
        time.sleep(3.0)  # the restarted worker has the redelivered records again
        assert {r.run_id: r.deadline_ms for r in desk.pending()} == deadlines
        desk.decide(runs[0].run_id, "approve", note=None, reviewer="bo")
        desk.decide(runs[1].run_id, "decline", note="no", reviewer="bo")
        records = sent(client_config, topology, 2)
        decisions = {r.key: header(r, "streams.review.decision") for r in records}
        assert decisions == {runs[0].run_id.encode(): "approve", runs[1].run_id.encode(): "decline"}
    finally:
        desk.close()


def test_on_timeout_escalate_without_a_retry_policy_dead_letters_escalated(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(admin, max_pending=5, max_wait_s=1.5, on_timeout="escalate")
    start(workers, review_worker(topology, "approve", client_config, options=FAST))
    [event] = events(topology, "approve", 1)
    publish(client_config, topology.stages["approve"].input_topics_by_lane["standard"], [event])
    [letter] = read_dead_letters(
        client_config, topology.dead_letter_topic, 3, expect=1, timeout_s=20
    )
    assert letter.reason == "escalated"
    assert "not decided within 1.5 s" in (letter.error_message or "")
    topic = topology.stages["send"].input_topics_by_lane["standard"]
    assert read_records(client_config, topic, 3, expect=1, timeout_s=2) == []  # nothing went on


def test_the_server_refuses_what_is_not_a_decision_of_a_pending_review(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = review_flow(admin, max_pending=5, max_wait_s=40, on_timeout="decline")
    server = ReviewServer(topology, client_config, host="127.0.0.1", port=0).start()
    url = f"{server.url}/v1/workflows/{topology.workflow}/reviews"

    def status(path: str, body: object | None = None) -> int:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{url}{path}", data=data, method="GET" if data is None else "POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)

    try:
        assert status("") == 200
        assert status("/nobody") == 404
        assert status("/nobody", {"decision": "approve", "reviewer": "ana"}) == 409
        assert status("/nobody", {"decision": "maybe", "reviewer": "ana"}) == 422
        assert status("/nobody", {"decision": "approve", "reviewer": "timeout"}) == 422
        assert status("/nobody", {"decision": "approve"}) == 422  # who decided?
        assert status("/nobody", [1]) == 422
        with urllib.request.urlopen(f"{server.url}/v1/workflows/other/reviews", timeout=5) as r:
            raise AssertionError(f"another workflow answered {r.status}")
    except urllib.error.HTTPError as exc:
        exc.close()
        assert exc.code == 404
    finally:
        server.close()


def test_a_worker_lets_go_of_reviews_whose_partitions_moved_to_another(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(admin, max_pending=6, max_wait_s=50, on_timeout="decline")
    first = start(workers, review_worker(topology, "approve", client_config, options=FAST))
    runs = events(topology, "approve", 6)
    publish(client_config, topology.stages["approve"].input_topics_by_lane["standard"], runs)
    labels = {"workflow": topology.workflow, "stage": "approve"}

    def pending(worker: StageWorker) -> float:
        return worker.registry.get_sample_value("streams_review_pending", labels) or 0.0

    wait_for(lambda: pending(first) == 6, 20, "6 reviews parked at the first worker")
    second = start(workers, review_worker(topology, "approve", client_config, options=FAST))
    wait_for(lambda: pending(second) > 0, 30, "the second worker holding its share")
    # Each parked review is held by one worker: the first let go of those that moved.
    wait_for(lambda: pending(first) + pending(second) == 6, 10, "6 held in all")
    time.sleep(1.0)
    assert pending(first) + pending(second) == 6


def test_a_run_sent_to_review_again_is_reviewed_again(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    """A replayed run (a new record of the same run, e.g. `streams dlq replay` of one that
    timed out) gets a fresh review; only a redelivery of the same record finds its old one."""
    topology = review_flow(admin, max_pending=5, max_wait_s=1.5, on_timeout="escalate")
    start(workers, review_worker(topology, "approve", client_config, options=FAST))
    [event] = events(topology, "approve", 1)
    topic = topology.stages["approve"].input_topics_by_lane["standard"]
    publish(client_config, topic, [event])
    read_dead_letters(client_config, topology.dead_letter_topic, 3, expect=1, timeout_s=20)
    desk = ReviewDesk(topology, client_config)
    try:
        wait_for(lambda: getattr(desk.get(event.run_id), "state", "") == "timed_out", 10, "timeout")
        first = desk.get(event.run_id)
        assert first is not None
        publish(client_config, topic, [event])  # the same run, sent again
        wait_for(lambda: getattr(desk.get(event.run_id), "state", "") == "pending", 10, "parked")
        again = desk.get(event.run_id)
        assert again is not None and again.admitted_at_ms > first.admitted_at_ms
    finally:
        desk.close()
