"""A stage worker against the real broker: emits, dead letters, expiry, per-key order."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections import defaultdict
from typing import Any

import pytest

from streams.errors import DeadLetterLimitExceeded
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, publish_raw, read_dead_letters, read_events

from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_records_flow_to_the_next_stage(admin: Admin, client_config: ClientConfig) -> None:
    topology = make_workflow(admin, {"plan": {"downstream": ["act"]}, "act": {}})
    sent = events(topology, "plan", 200)
    publish(client_config, f"{topology.workflow}.plan.standard", sent)
    seen: list[str] = []

    async def handler(event: Any, ctx: Any) -> None:
        seen.append(event.run_id)
        ctx.emit(event)

    options = WorkerOptions(metrics_port=0)
    worker = StageWorker(topology, "plan", client_config, handler=handler, options=options)
    running = WorkerThread(worker).start()
    out = read_events(client_config, f"{topology.workflow}.act.standard", 3, expect=200)
    time.sleep(1.5)  # one commit interval and one metrics report
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics").read()
    running.stop()
    assert running.error is None
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in sent)
    assert all(e.stage == "act" for e in out)
    assert sorted(seen) == sorted(e.run_id for e in sent)
    text = metrics.decode()
    assert 'streams_records_total{outcome="emitted",stage="plan"' in text or (
        "streams_records_total" in text and 'outcome="emitted"' in text
    )
    assert "streams_oldest_queued_age_seconds" in text
    assert "streams_lag_records" in text


def test_partition_series_appear_as_soon_as_partitions_are_assigned(
    admin: Admin, client_config: ClientConfig
) -> None:
    """A worker that drains its backlog before its first report round still shows the
    queue age and lag of every partition it owns: the series must not wait a round."""
    topology = make_workflow(admin, {"plan": {}})
    options = WorkerOptions(metrics_port=0, report_interval_s=3600.0)
    running = WorkerThread(StageWorker(topology, "plan", client_config, options=options)).start()
    try:
        url = f"http://127.0.0.1:{running.worker.metrics_port}/metrics"
        deadline = time.monotonic() + 20
        while not (owned := running.worker.partitions()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a second of loop rounds, far short of the report interval
        text = urllib.request.urlopen(url).read().decode()
    finally:
        running.stop()
    assert running.error is None
    assert owned, "no partitions assigned in 20 s"
    for tp, view in owned.items():
        labels = {"topic": tp.topic, "partition": str(tp.partition), "stage": "plan"}
        assert _has_series(text, "streams_oldest_queued_age_seconds", lane=view.lane, **labels)
        assert _has_series(text, "streams_lag_records", **labels), text


def _has_series(text: str, name: str, **labels: str) -> bool:
    return any(
        line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        for line in text.splitlines()
    )


def test_undecodable_record_is_dead_lettered_with_raw_bytes_and_the_rest_flow(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {}}, partitions=1)
    topic = f"{topology.workflow}.plan.standard"
    poison = b"\x00not avro at all"
    good = events(topology, "plan", 10)
    publish(client_config, topic, good[:5])
    publish_raw(client_config, topic, [poison], key=b"poison-key")
    publish(client_config, topic, good[5:])
    worker = WorkerThread(StageWorker(topology, "plan", client_config)).start()
    out = read_events(client_config, topology.completed_topic, 1, expect=10)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=1)
    worker.stop()
    assert worker.error is None
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in good)
    assert len(dead) == 1
    assert dead[0].reason == "decode_error"
    assert dead[0].raw_value == poison
    assert dead[0].original_key == b"poison-key"
    assert dead[0].original_offset == 5
    assert "not Avro single-object encoding" in (dead[0].error_message or "")


def test_handler_error_and_timeout_are_dead_lettered(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {"handler_timeout_s": 0.5}})
    fail, slow, fine = (
        events(topology, "plan", 3, payload=b"fail"),
        events(topology, "plan", 2, payload=b"slow"),
        events(topology, "plan", 5),
    )
    cancelled: list[str] = []

    async def handler(event: Any, ctx: Any) -> None:
        if event.payload == b"fail":
            raise ValueError(f"cannot plan {event.run_id}")
        if event.payload == b"slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(event.run_id)
                raise
        ctx.emit(event)

    publish(client_config, f"{topology.workflow}.plan.standard", fail + slow + fine)
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    out = read_events(client_config, topology.completed_topic, 6, expect=5)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=5)
    worker.stop()
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in fine)
    by_reason = defaultdict(list)
    for letter in dead:
        by_reason[letter.reason].append(letter)
    assert len(by_reason["handler_error"]) == 3
    assert all(letter.error_type == "ValueError" for letter in by_reason["handler_error"])
    assert all(
        "cannot plan" in (letter.error_message or "") for letter in by_reason["handler_error"]
    )
    assert len(by_reason["timeout"]) == 2
    assert sorted(cancelled) == sorted(e.run_id for e in slow)


def test_expired_records_go_to_dead_letters_and_never_reach_the_handler(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {"max_queue_age_s": 5}})
    too_old = events(topology, "plan", 4, age_s=60)
    past_deadline = events(topology, "plan", 3, deadline_in_s=-1)
    fresh = events(topology, "plan", 5, deadline_in_s=600)
    handled: list[str] = []

    async def handler(event: Any, ctx: Any) -> None:
        handled.append(event.run_id)
        ctx.emit(event)

    publish(client_config, f"{topology.workflow}.plan.standard", too_old + past_deadline + fresh)
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    out = read_events(client_config, topology.completed_topic, 6, expect=5)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=7)
    worker.stop()
    assert sorted(handled) == sorted(e.run_id for e in fresh)
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in fresh)
    assert len(dead) == 7
    assert {d.reason for d in dead} == {"expired"}
    messages = sorted(d.error_message or "" for d in dead)
    assert sum("deadline" in m for m in messages) == 3
    assert sum("queue age" in m for m in messages) == 4


def test_per_key_order_holds_while_concurrency_exceeds_partitions(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {"concurrency": 40}}, partitions=2)
    keys = [f"run-{i}" for i in range(20)]
    sent = []
    for seq in range(8):
        batch = events(topology, "plan", len(keys), payload=str(seq).encode(), run_ids=keys)
        sent.extend(batch)
    active: dict[str, int] = defaultdict(int)
    started: dict[str, list[int]] = defaultdict(list)
    overlap: list[str] = []
    peak = [0]
    lock = threading.Lock()

    async def handler(event: Any, ctx: Any) -> None:
        with lock:
            active[event.run_id] += 1
            if active[event.run_id] > 1:
                overlap.append(event.run_id)
            started[event.run_id].append(int(event.payload))
            peak[0] = max(peak[0], sum(active.values()))
        await asyncio.sleep(0.02)
        with lock:
            active[event.run_id] -= 1
        ctx.emit(event)

    out = _through_plan(client_config, topology, sent, handler)
    assert len(out) == len(sent)
    assert overlap == []
    assert all(seqs == list(range(8)) for seqs in started.values()), dict(started)
    assert peak[0] > 2  # more handler calls at once than partitions


def test_no_more_handler_calls_at_once_than_the_concurrency_cap(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {"concurrency": 4}}, partitions=2)
    sent = events(topology, "plan", 60)  # 60 distinct runs: only the cap holds them back
    active, peak = [0], [0]
    lock = threading.Lock()

    async def handler(event: Any, ctx: Any) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.01)
        with lock:
            active[0] -= 1
        ctx.emit(event)

    out = _through_plan(client_config, topology, sent, handler)
    assert len(out) == len(sent)
    assert peak[0] == 4


def _through_plan(
    client_config: ClientConfig, topology: Any, sent: list[Any], handler: Any
) -> list[Any]:
    """Publish `sent` to plan's input, run a plan worker until it is all out, stop it."""
    publish(client_config, f"{topology.workflow}.plan.standard", sent)
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    out: list[Any] = read_events(client_config, topology.completed_topic, 2, expect=len(sent))
    worker.stop()
    return out


def test_dead_letter_valve_stops_the_worker_instead_of_dead_lettering_everything(
    admin: Admin, client_config: ClientConfig
) -> None:
    limit = {"max_ratio": 0.5, "window": 20, "min_records": 10, "max_consecutive": 10}
    topology = make_workflow(admin, {"plan": {"dead_letter_limit": limit}}, partitions=1)

    async def handler(event: Any, ctx: Any) -> None:
        raise RuntimeError("dependency is down")

    publish(client_config, f"{topology.workflow}.plan.standard", events(topology, "plan", 200))
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    worker.thread.join(60)
    assert not worker.thread.is_alive()
    assert isinstance(worker.error, DeadLetterLimitExceeded)
    assert "consecutive" in str(worker.error) or "ratio" in str(worker.error)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=200, timeout_s=3)
    assert 10 <= len(dead) < 200
    committed = admin.committed_offsets(
        topology.stages["plan"].consumer_group,
        admin.partitions_of([f"{topology.workflow}.plan.standard"]),
    )
    # Nothing is committed past what was dead-lettered.
    assert all(offset is None or offset <= len(dead) for offset in committed.values())
