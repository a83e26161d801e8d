"""streams.faust against the real broker, with faust's own driver: a faust app (see
faust_app.py) runs in a subprocess as `python -m tests.integration.faust_app worker` and is
watched from outside, the way streams' own workers and the monitor see it: its group's lag,
the workflow's pressure topic, its dead letters and its metrics endpoint."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.errors import BrokerUnavailable
from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.monitor.collector import WorkflowReader
from streams.runtime.context import HandlerContext
from streams.runtime.pressure_reports import PressureReport, ReportBoard
from streams.runtime.worker import StageWorker
from streams.testing import (
    WorkerThread,
    publish,
    publish_raw,
    read_dead_letters,
    read_events,
    read_records,
)
from streams.topology import Topology

from .handlers import noop
from .metrics_processes import free_port
from .monitor_helpers import wait_for
from .process_helpers import REPO_ROOT, write_workflow
from .test_worker_pressure import FAST, stage_lag
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


@dataclass
class FaustWorker:
    """The faust app's subprocess and where to look at it."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    seen_path: Path
    metrics_url: str

    def seen(self) -> list[str]:
        """Run ids the agent was handed, in order."""
        if not self.seen_path.exists():
            return []
        return self.seen_path.read_text(encoding="utf-8").split()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def sample(self, name: str, **labels: str) -> float | None:
        """The value of one series on the metrics endpoint, None if it is not there."""
        for family in text_string_to_metric_families(self.metrics()):
            for each in family.samples:
                if each.name == name and each.labels == labels:
                    return float(each.value)
        return None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def faust_worker(
    bootstrap: str,
    topology_file: Path,
    stage: str,
    directory: Path,
    *,
    work_s: float = 0.0,
    fail_on: bytes = b"",
    emit: bool = True,
    buffer: int = 8,
    max_poll_records: int = 8,
) -> Iterator[FaustWorker]:
    directory.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port("127.0.0.1")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FAUST_TEST_TOPOLOGY": str(topology_file),
        "FAUST_TEST_STAGE": stage,
        "FAUST_TEST_BOOTSTRAP": bootstrap,
        "FAUST_TEST_DATADIR": str(directory / "data"),
        "FAUST_TEST_WEB_PORT": str(free_port("127.0.0.1")),
        "FAUST_TEST_METRICS_PORT": str(metrics_port),
        "FAUST_TEST_SEEN": str(directory / "seen.txt"),
        "FAUST_TEST_WORK_S": str(work_s),
        "FAUST_TEST_FAIL_ON": fail_on.decode(),
        "FAUST_TEST_EMIT": "1" if emit else "0",
        "FAUST_TEST_BUFFER": str(buffer),
        "FAUST_TEST_MAX_POLL": str(max_poll_records),
    }
    log_path = directory / "faust.log"
    argv = [sys.executable, "-m", "tests.integration.faust_app", "worker", "-l", "info"]
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    worker = FaustWorker(
        popen, log_path, directory / "seen.txt", f"http://127.0.0.1:{metrics_port}/metrics"
    )
    try:
        yield worker
    except BaseException:
        print(worker.log()[-6000:])  # shown with the failure
        raise
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)


@contextlib.contextmanager
def report_board(client: ClientConfig, topology: Topology) -> Iterator[ReportBoard]:
    board = ReportBoard(TopicTail(client, topology.pressure_topic, 1))
    try:
        yield board
    finally:
        board.close()


def parts(topology: Topology, topic: str) -> int:
    return topology.all_topics()[topic].partitions


def faust_report(board: ReportBoard, stage: str) -> PressureReport | None:
    board.refresh()
    reports = [r for (s, _), r in board.latest().items() if s == stage]
    return max(reports, key=lambda r: r.reported_at) if reports else None


def paused_by_pressure(board: ReportBoard, topology: Topology, stage: str) -> bool:
    """The faust worker's newest report says every input partition of the stage is paused
    for downstream pressure."""
    report = faust_report(board, stage)
    if report is None or not report.pressure_paused:
        return False
    partitions = topology.stages[stage].topic_spec.partitions
    held = {(p.topic, p.partition) for p in report.paused if "downstream" in p.reasons}
    wanted = {(t, i) for t in topology.stages[stage].input_topics for i in range(partitions)}
    return held == wanted


def faust_then_sink(admin: Admin, directory: Path, *, partitions: int) -> tuple[Topology, Path]:
    """fa (the faust stage) feeds sink (a streams stage), pausing at sink lag 30."""
    return write_workflow(
        admin,
        directory,
        {
            "fa": {
                "downstream": ["sink"],
                "pressure": {
                    # Resume well above what faust fetches before its first verdict.
                    "lag": {"pause": 30, "resume": 20},
                    "oldest_age_s": {"pause": 250, "resume": 200},
                    "min_dwell_s": 0.5,
                },
            },
            "sink": {"max_lag": 1000},
        },
        partitions=partitions,
    )


def paused_on_lag(admin: Admin, board: ReportBoard, topology: Topology) -> bool:
    """Paused by sink's lag (not only by the fail-safe pause before the first reading)."""
    try:
        lag = stage_lag(admin, topology, "sink")
    except BrokerUnavailable:  # NOT_LEADER_FOR_PARTITION: a new topic's leader not known yet
        return False
    return lag >= 30 and paused_by_pressure(board, topology, "fa")


def test_a_faust_stage_pauses_while_the_streams_stage_downstream_is_stopped(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = faust_then_sink(admin, tmp_path, partitions=2)
    sent = events(topology, "fa", 150)
    publish(client_config, f"{topology.workflow}.fa.standard", sent)
    with (
        report_board(client_config, topology) as board,
        faust_worker(bootstrap, path, "fa", tmp_path / "faust", work_s=0.01) as faust,
    ):
        # sink has no worker: its lag grows with what the faust agent emits, until the
        # faust stage pauses its input.
        wait_for(lambda: paused_on_lag(admin, board, topology), 60, "faust to pause")
        sink_lag, handed = stage_lag(admin, topology, "sink"), len(faust.seen())
        time.sleep(3.0)  # paused: the agent is handed nothing more, so emits nothing
        assert (stage_lag(admin, topology, "sink"), len(faust.seen())) == (sink_lag, handed)
        # The pause point plus what the agent emitted after sink's lag was read: the verdict
        # reads a lag up to pressure_refresh_s (0.2 s) old, in which the agent (10 ms a
        # record) emits up to 20 more, and the record in the agent when it paused (seen:
        # a verdict on a reading of 35, and 36 at the pause).
        assert 30 <= sink_lag <= 30 + 20 + 1, sink_lag
        assert handed < 150 and stage_lag(admin, topology, "fa") > 0
        # The downstream stage starts and drains: the faust stage resumes and finishes.
        sink = StageWorker(topology, "sink", client_config, handler=noop, options=FAST)
        running = WorkerThread(sink).start()
        try:
            done = read_events(
                client_config,
                topology.completed_topic,
                parts(topology, topology.completed_topic),
                expect=150,
                timeout_s=90,
            )
            assert {e.run_id for e in done} == {e.run_id for e in sent}
            wait_for(lambda: stage_lag(admin, topology, "fa") == 0, 30, "faust to commit all")
            wait_for(lambda: not paused_by_pressure(board, topology, "fa"), 10, "resumed report")
        finally:
            running.stop()
        assert running.error is None
        assert sorted(faust.seen()) == sorted(e.run_id for e in sent)


def test_records_fetched_before_a_pause_all_reach_the_agent_after_it_resumes(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    # Big fetches into a big stream buffer: faust's getmany hands a batch of up to 1000
    # records over, yielding to the event loop every 100, so the stage's pause before its
    # first downstream reading (sink.missing) lands in the middle of a batch; the stage
    # resumes when sink's lag is read (0: the agent completes runs, it emits nothing).
    topology, path = faust_then_sink(admin, tmp_path, partitions=1)
    sent = events(topology, "fa", 3000)
    publish(client_config, f"{topology.workflow}.fa.standard", sent)
    with faust_worker(
        bootstrap, path, "fa", tmp_path / "faust", emit=False, buffer=4096, max_poll_records=1000
    ) as faust:
        wait_for(lambda: stage_lag(admin, topology, "fa") == 0, 60, "faust to commit all")
        # Committed past every record, and every one was handed to the agent, once.
        assert sorted(faust.seen()) == sorted(e.run_id for e in sent)


def test_paused_partitions_stay_paused_when_a_second_faust_worker_joins(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = faust_then_sink(admin, tmp_path, partitions=4)
    publish(client_config, f"{topology.workflow}.fa.standard", events(topology, "fa", 200))
    with (
        report_board(client_config, topology) as board,
        faust_worker(bootstrap, path, "fa", tmp_path / "one", work_s=0.01) as one,
    ):
        wait_for(lambda: paused_on_lag(admin, board, topology), 60, "faust to pause")
        with faust_worker(bootstrap, path, "fa", tmp_path / "two", work_s=0.01) as two:
            # Both members hold some partitions, each still paused after the rebalance.
            def split_and_paused() -> bool:
                board.refresh()
                now = time.time()
                live = [
                    r for (s, _), r in board.latest().items()
                    if s == "fa" and now - r.reported_at < 2.0
                ]  # fmt: skip
                held = [{(p.topic, p.partition) for p in r.paused} for r in live]
                return len(live) == 2 and all(held) and len(set().union(*held)) == 4

            wait_for(split_and_paused, 60, "two paused members")
            sink_lag, handed = stage_lag(admin, topology, "sink"), len(one.seen() + two.seen())
            time.sleep(3.0)
            assert stage_lag(admin, topology, "sink") == sink_lag
            assert len(one.seen() + two.seen()) == handed
            # A record each member held when the rebalance ended its hold may have gone on.
            assert 30 <= sink_lag <= 30 + 10, sink_lag
            assert stage_lag(admin, topology, "fa") > 0


def test_expired_records_go_to_the_dead_letters_with_their_bytes_and_never_reach_the_agent(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = write_workflow(admin, tmp_path, {"fa": {"max_queue_age_s": 60}}, partitions=2)
    topic = f"{topology.workflow}.fa.standard"
    old = events(topology, "fa", 5, age_s=120)
    past_deadline = events(topology, "fa", 2, deadline_in_s=-1)
    fresh = events(topology, "fa", 5)
    publish(client_config, topic, [*old, *past_deadline, *fresh])
    publish_raw(client_config, topic, [b"not an envelope"], key=b"garbage")
    raw = {
        (r.partition, r.offset): r.value for r in read_records(client_config, topic, 2, expect=13)
    }
    with faust_worker(bootstrap, path, "fa", tmp_path / "faust") as faust:
        letters = read_dead_letters(
            client_config,
            topology.dead_letter_topic,
            parts(topology, topology.dead_letter_topic),
            expect=8,
        )
        done = read_events(
            client_config,
            topology.completed_topic,
            parts(topology, topology.completed_topic),
            expect=5,
            timeout_s=60,
        )
        assert {e.run_id for e in done} == {e.run_id for e in fresh}
        reasons = sorted(letter.reason for letter in letters)
        assert reasons == ["decode_error", *["expired"] * 7]
        for letter in letters:
            assert letter.stage == "fa"
            assert letter.raw_value == raw[(letter.original_partition, letter.original_offset)]
        assert sorted(faust.seen()) == sorted(e.run_id for e in fresh)

        # (d) the same metrics a streams worker exports, on the stage's endpoint.
        def sample(name: str, **labels: str) -> float | None:
            return faust.sample(name, workflow=topology.workflow, stage="fa", **labels)

        wait_for(lambda: sample("streams_dead_letters_total", reason="expired") == 7, 10, "DLQ")
        assert sample("streams_dead_letters_total", reason="decode_error") == 1
        assert sample("streams_records_total", outcome="emitted") == 5
        assert sample("streams_handler_latency_seconds_count") == 5
        for partition in ("0", "1"):
            at = {"topic": topic, "partition": partition}
            assert sample("streams_lag_records", **at) is not None
            assert sample("streams_oldest_queued_age_seconds", **at, lane="standard") is not None
            assert sample("streams_partition_paused", **at, reason="downstream") == 0


def test_a_record_the_agent_raises_on_is_dead_lettered_and_the_agent_goes_on(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = write_workflow(admin, tmp_path, {"fa": {}}, partitions=1)
    topic = f"{topology.workflow}.fa.standard"
    before, after = events(topology, "fa", 3), events(topology, "fa", 3)
    boom = events(topology, "fa", 1, payload=b"boom")
    publish(client_config, topic, [*before, *boom, *after])
    published = {r.offset: r.value for r in read_records(client_config, topic, 1, expect=7)}
    with faust_worker(bootstrap, path, "fa", tmp_path / "faust", fail_on=b"boom") as faust:
        letters = read_dead_letters(
            client_config, topology.dead_letter_topic, parts(topology, topology.dead_letter_topic),
            expect=1,
        )  # fmt: skip
        assert [(d.reason, d.original_offset) for d in letters] == [("handler_error", 3)]
        assert letters[0].raw_value == published[3]
        assert "the agent failed on this one" in (letters[0].error_message or "")
        done = read_events(
            client_config, topology.completed_topic, parts(topology, topology.completed_topic),
            expect=6, timeout_s=60,
        )  # fmt: skip
        assert {e.run_id for e in done} == {e.run_id for e in [*before, *after]}
        wait_for(lambda: stage_lag(admin, topology, "fa") == 0, 30, "faust to commit all")
        assert faust.seen().count(boom[0].run_id) == 1


def test_a_run_the_agent_ends_without_emitting_is_written_to_the_completed_topic(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = write_workflow(admin, tmp_path, {"fa": {}}, partitions=1)
    sent = events(topology, "fa", 4)
    publish(client_config, f"{topology.workflow}.fa.standard", sent)
    with faust_worker(bootstrap, path, "fa", tmp_path / "faust", emit=False):
        done = read_records(
            client_config, topology.completed_topic, parts(topology, topology.completed_topic),
            expect=4, timeout_s=60,
        )  # fmt: skip
    assert sorted(r.key or b"" for r in done) == sorted(e.run_id.encode() for e in sent)
    assert all(("streams.finished_at_stage", b"fa") in r.headers for r in done)


def forward(event: TaskEvent, ctx: HandlerContext) -> None:
    ctx.emit(event)


def test_streams_workers_and_the_monitor_see_the_faust_stage_s_pressure_reports(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    # up (a streams worker) feeds fa (faust), which takes 0.3 s a record: up pauses on
    # fa's p95 latency, which only fa's pressure reports can tell it.
    topology, path = write_workflow(
        admin,
        tmp_path,
        {
            "up": {
                "downstream": ["fa"],
                "pressure": {
                    "lag": {"pause": 900, "resume": 500},
                    "oldest_age_s": {"pause": 250, "resume": 200},
                    "p95_latency_s": {"pause": 0.2, "resume": 0.1},
                    "min_dwell_s": 0.5,
                },
            },
            "fa": {},
        },
        partitions=1,
    )
    publish(client_config, f"{topology.workflow}.up.standard", events(topology, "up", 40))
    up = StageWorker(
        topology,
        "up",
        client_config,
        handler=forward,
        options=FAST,
    )
    with (
        faust_worker(bootstrap, path, "fa", tmp_path / "faust", work_s=0.3),
        report_board(client_config, topology) as board,
    ):
        running = WorkerThread(up).start()
        try:
            # Over the threshold, not the fail-safe pause before the first reading.
            over = re.compile(r"fa\.p95_s=[0-9.]+>=0\.2")
            wait_for(lambda: bool(over.search(up.status().last_pause_reason)), 60, "up to pause")
        finally:
            running.stop()
        assert running.error is None
        # What up read: the faust stage's own report.
        wait_for(
            lambda: (r := faust_report(board, "fa")) is not None and (r.p95_latency_s or 0) >= 0.2,
            10,
            "the faust stage's report",
        )
        reader = WorkflowReader(topology, client_config)
        try:
            snapshot = reader.read()
        finally:
            reader.close()
        views = [w for w in snapshot.workers if w.stage == "fa"]
        assert views and views[0].alive and (views[0].p95_latency_s or 0) >= 0.2
