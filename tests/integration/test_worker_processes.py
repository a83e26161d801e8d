"""`streams worker --processes 2` as a real command against the real broker: two members
of the stage's group (worker ids X-0 and X-1), every record out, one metrics endpoint
with both children's samples labelled `process` (promtool finds nothing), a child killed
with -9 restarted and the work going on, and SIGTERM ending the group with exit 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import publish
from tests.promtool import check_metrics

from .metrics_processes import free_port, sample_value, scrape, streams_argv
from .process_helpers import REPO_ROOT, TopicReader, write_workflow
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STAGE = "work"
PARTITIONS = 4


@contextlib.contextmanager
def _group_command(
    argv: list[str], log_path: Path, bootstrap: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The supervisor in a session of its own, so that whatever the test leaves running
    (it, its children) is killed as one process group at the end; the log is printed."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    env["PROC_HANDLER_SLEEP_S"] = "0.01"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        print(f"--- {log_path.name}\n{log_path.read_text(errors='replace')}")


def _wait_for(what: str, done: Callable[[], bool], timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{log_path.read_text()}")
        time.sleep(0.2)


def _scrape_or_empty(url: str) -> str:
    try:
        return scrape(url)
    except OSError:
        return ""


def _child_pids(log_path: Path, index: int) -> list[int]:
    """Every pid child `index` had, in order, from the supervisor's log."""
    pattern = rf"worker process {index} started \(pid (\d+)\)"
    return [int(pid) for pid in re.findall(pattern, log_path.read_text())]


def _stable_members(client_config: ClientConfig, group: str) -> frozenset[str]:
    """The member ids of the group once it is stable (empty while it rebalances)."""
    admin = AdminClient(client_config.as_librdkafka())
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(
        timeout=15
    )
    if str(described.state) != "ConsumerGroupState.STABLE":
        return frozenset()
    return frozenset(member.member_id for member in described.members)


def _restarted_child_emits(text: str) -> bool:
    emitted = sample_value(text, "streams_records_total", process="0", outcome="emitted")
    return sample_value(text, "streams_worker_processes", state="up") == 2 and emitted > 0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_two_processes_one_endpoint_restart_and_sigterm(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = write_workflow(
        admin, tmp_path, {STAGE: {"concurrency": 8}}, partitions=PARTITIONS
    )
    topic = topology.stages[STAGE].input_topics_by_lane["standard"]
    group = topology.stages[STAGE].consumer_group
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    argv = streams_argv("worker", str(path), "--stage", STAGE, "--processes", "2")
    argv += ["--metrics-port", str(port), "--worker-id", "grp"]
    log_path = tmp_path / "group.log"
    first = events(topology, STAGE, 200)

    with (
        _group_command(argv, log_path, bootstrap) as supervisor,
        TopicReader(client_config, topology.completed_topic, PARTITIONS) as out,
    ):
        # A group of two members; then every record out, from both.
        _wait_for(
            "a stable group of two members",
            lambda: len(_stable_members(client_config, group)) == 2,
            30,
            log_path,
        )
        members = _stable_members(client_config, group)
        publish(client_config, topic, first)
        wanted = {e.run_id for e in first}
        assert out.wait_until(lambda r: wanted <= set(r.run_ids()), 60), log_path.read_text()
        log = log_path.read_text()
        assert "worker grp-0 consuming" in log and "worker grp-1 consuming" in log

        # One scrape: both children, each sample labelled, the live-children gauge, and
        # nothing promtool objects to.
        _wait_for(
            "both children emitting in one scrape",
            lambda: all(
                sample_value(
                    _scrape_or_empty(url), "streams_records_total", process=p, outcome="emitted"
                )
                > 0
                for p in ("0", "1")
            ),
            30,
            log_path,
        )
        text = scrape(url)
        samples = [line for line in text.splitlines() if line and not line.startswith("#")]
        per_child = {p: sum(f'process="{p}"' in line for line in samples) for p in ("0", "1")}
        print(f"one scrape: {len(text.splitlines())} lines, samples per child {per_child}")
        assert per_child["0"] > 10 and per_child["1"] > 10
        unlabelled = [s for s in samples if "process=" not in s]
        assert all(s.startswith("streams_worker_processes{") for s in unlabelled), unlabelled
        assert sample_value(text, "streams_worker_processes", state="up") == 2
        assert sample_value(text, "streams_worker_processes", state="down") == 0
        assert check_metrics(text) == ""
        assert sum(
            sample_value(text, "streams_records_total", process=p, outcome="emitted")
            for p in ("0", "1")
        ) >= len(first)

        # kill -9 one child: it is restarted (same worker id) and the work goes on.
        (victim,) = _child_pids(log_path, 0)
        os.kill(victim, signal.SIGKILL)
        _wait_for("child 0 restarted", lambda: len(_child_pids(log_path, 0)) == 2, 15, log_path)
        assert f"worker process 0 (pid {victim}) killed by SIGKILL; restarting it" in (
            log_path.read_text()
        )
        # The dead member leaves the group when its session times out (10 s); then the
        # restarted child shares the work again: its fresh counters show it emitting.
        _wait_for(
            "a stable group of two members again, the restarted child one of them",
            lambda: len(now := _stable_members(client_config, group)) == 2 and now != members,
            30,
            log_path,
        )
        second = events(topology, STAGE, 100)
        publish(client_config, topic, second)
        wanted |= {e.run_id for e in second}
        assert out.wait_until(lambda r: wanted <= set(r.run_ids()), 45), log_path.read_text()
        _wait_for(
            "the restarted child emitting, both answering",
            lambda: _restarted_child_emits(_scrape_or_empty(url)),
            30,
            log_path,
        )
        assert log_path.read_text().count("worker grp-0 consuming") == 2
        assert supervisor.poll() is None

        # SIGTERM to the supervisor: every child drains and leaves, the group exits 0.
        children = [_child_pids(log_path, 0)[-1], _child_pids(log_path, 1)[-1]]
        supervisor.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status = supervisor.wait(45)
        took_s = time.monotonic() - signalled
        assert status == 0, f"exit status {status} after {took_s:.1f} s"
        assert all(_gone(pid) for pid in children), children
        print(f"SIGTERM to exit 0: {took_s:.1f} s")


def test_a_bad_stage_fails_before_any_child_starts(
    admin: Admin, bootstrap: str, tmp_path: Path
) -> None:
    """Exactly-once without --worker-id: the same one line and exit 1 as one worker gives,
    once, from the supervisor, with no child started."""
    _, path = write_workflow(admin, tmp_path, {STAGE: {"delivery": "exactly_once"}})
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    single, group = (
        subprocess.run(
            streams_argv("worker", str(path), "--stage", STAGE, *more),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for more in ([], ["--processes", "2"])
    )
    assert single.returncode == 1 and group.returncode == 1, group.stderr
    errors = [line for line in group.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [line for line in single.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--worker-id" in errors[0]
    assert "worker process" not in group.stderr  # no child was started


def test_processes_below_1_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        streams_argv("worker", str(tmp_path / "any.yaml"), "--stage", STAGE, "--processes", "0"),
        cwd=REPO_ROOT, env={**os.environ, "COLUMNS": "200"},  # the message on one line
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Invalid value for '--processes'" in result.stderr, result.stderr
    assert "greater than or equal to 1" in result.stderr
