"""`streams monitor` against the real broker: a stage paused by downstream pressure with a
backlog, and a stopped stage with no worker. What the monitor prints (--once --json) and
serves (--serve: Prometheus, JSON API, status page) must show the lag, a positive oldest
age and the pause reason, and its lag must agree with Kafka's own ConsumerGroupCommand."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.config import load_settings
from streams.errors import BrokerUnavailable
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish
from streams.topology import Topology
from streams.types import TopicPartition
from tests.promtool import check_metrics

from .browser import headless_chromium
from .monitor_helpers import sorted_labels, wait_for
from .process_helpers import REPO_ROOT, write_workflow
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FAST = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.5)
NOOP = "tests.integration.handlers:noop"


def lag_by_partition(admin: Admin, topology: Topology, stage: str) -> dict[TopicPartition, int]:
    spec = topology.stages[stage]
    partitions = admin.partitions_of(spec.input_topics)
    deadline = time.monotonic() + 30
    while True:
        try:
            ends = admin.end_offsets(partitions)
            committed = admin.committed_offsets(spec.consumer_group, partitions)
            break
        except BrokerUnavailable:  # a broker just started: its group coordinator is loading
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return {tp: ends[tp] - (committed.get(tp) or 0) for tp in partitions}


def consume_and_commit(client: ClientConfig, topology: Topology, stage: str, admin: Admin) -> None:
    """Act as the stage for a moment (read everything, commit it), then leave the group."""
    spec = topology.stages[stage]
    consumer = GroupConsumer(client, spec.consumer_group, spec.input_topics)
    try:
        deadline = time.monotonic() + 30
        while sum(lag_by_partition(admin, topology, stage).values()) > 0:
            assert time.monotonic() < deadline, f"{stage} did not catch up"
            latest = {r.tp: r.offset + 1 for r in consumer.poll(1000, 0.5)}
            consumer.commit(latest)
        # Every partition gets a committed offset, those the keys left empty too (as an
        # auto-committing consumer does): Kafka's tool prints no LAG for a partition
        # without one, and the comparison below needs all of act's.
        partitions = admin.partitions_of(spec.input_topics)
        ends = dict(admin.end_offsets(partitions))
        while not consumer.commit(ends):
            assert time.monotonic() < deadline, f"{stage}'s offsets were not committed"
            time.sleep(0.5)
    finally:
        consumer.close()


@dataclass
class PausedScene:
    topology: Topology
    path: Path
    worker: StageWorker
    env: dict[str, str]
    backlog_sent_at: float  # wall time just before plan's paused backlog was published


@pytest.fixture(scope="module")
def scene(
    admin: Admin, client_config: ClientConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PausedScene]:
    """plan -> act. act ran once (committed offsets), then stopped; its lag passed plan's
    pause threshold, so the live plan worker paused its standard lane with 30 records
    queued behind the pause."""
    topology, path = write_workflow(
        admin,
        tmp_path_factory.mktemp("monitor"),
        {
            "plan": {
                "handler": NOOP,
                "downstream": ["act"],
                "pressure": {
                    "lag": {"pause": 50, "resume": 20},
                    "oldest_age_s": {"pause": 200, "resume": 100},
                    "min_dwell_s": 0.5,
                },
            },
            "act": {"handler": NOOP, "max_lag": 1000},
        },
        lanes=["urgent", "standard"],
    )
    wf = topology.workflow
    publish(client_config, f"{wf}.act.standard", events(topology, "act", 10))
    consume_and_commit(client_config, topology, "act", admin)
    worker = StageWorker(topology, "plan", client_config, options=FAST)
    running = WorkerThread(worker).start()
    try:
        publish(client_config, f"{wf}.plan.standard", events(topology, "plan", 20))
        wait_for(
            lambda: sum(lag_by_partition(admin, topology, "plan").values()) == 0,
            30,
            "plan to finish its first 20",
        )
        publish(client_config, f"{wf}.act.standard", events(topology, "act", 60))
        standard = [TopicPartition(f"{wf}.plan.standard", p) for p in range(3)]
        wait_for(
            lambda: all("downstream" in worker.pauses.reasons(tp) for tp in standard),
            15,
            "plan's standard lane to pause on act's lag",
        )
        sent_at = time.time()
        publish(client_config, f"{wf}.plan.standard", events(topology, "plan", 30))
        time.sleep(1.5)  # a pressure report after the pause, and an age to see
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}
        yield PausedScene(topology, path, worker, env, sent_at)
    finally:
        running.stop()
    assert running.error is None


def monitor_cmd(scene: PausedScene, *args: str) -> list[str]:
    return [sys.executable, "-m", "streams", "monitor", str(scene.path), *args]


def kafka_tools_lag(groups: list[str], bootstrap: str) -> dict[tuple[str, str, int], int]:
    """LAG per (group, topic, partition) as `kafka-consumer-groups --describe` prints it."""
    java = shutil.which("java")
    assert java, "java is needed (the local broker runs on it)"
    libs = load_settings().jar_cache / "libs"
    cmd = [
        java, "-cp", f"{libs}/*", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server", bootstrap, "--describe",
    ]  # fmt: skip
    for group in groups:
        cmd += ["--group", group]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    lags: dict[tuple[str, str, int], int] = {}
    for line in out.splitlines():
        cols = line.split()
        numbers = len(cols) >= 6 and re.fullmatch(r"\d+", cols[2]) and re.fullmatch(r"\d+", cols[5])
        if numbers and cols[0] in groups:
            lags[(cols[0], cols[1], int(cols[2]))] = int(cols[5])
    return lags


def stage_of(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in snapshot["stages"] if s["stage"] == name)


def test_once_json_shows_the_paused_backlog_and_agrees_with_kafka_tools(
    scene: PausedScene, admin: Admin, client_config: ClientConfig
) -> None:
    done = subprocess.run(
        monitor_cmd(scene, "--once", "--json"),
        capture_output=True, text=True, timeout=60, env=scene.env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    wf = scene.topology.workflow
    assert snapshot["workflow"] == wf

    plan = stage_of(snapshot, "plan")
    standard = next(lane for lane in plan["lanes"] if lane["lane"] == "standard")
    assert standard["lag"] == 30
    # The age of the first record behind the pause, from its broker timestamp: as old as
    # the backlog really is (the time-lag estimate only knows the monitor's own samples).
    true_age = snapshot["measured_at"] - scene.backlog_sent_at
    assert true_age - 1.5 <= standard["oldest_age_s"] <= true_age + 0.5, (standard, true_age)
    assert standard["time_lag_s"] <= standard["oldest_age_s"]
    assert plan["workers_alive"] == 1
    assert plan["concurrency"] == scene.topology.stages["plan"].concurrency
    assert plan["status"] == "STALL", plan  # lag, no commit progress, a worker holds it
    paused = [p for p in plan["partitions"] if p["lane"] == "standard"]
    assert paused and all("downstream" in p["paused_by"] for p in paused), paused
    assert plan["paused"].get("downstream") == 3

    act = stage_of(snapshot, "act")
    act_lag = sum(lag_by_partition(admin, scene.topology, "act").values())
    assert act["lag"] == act_lag >= 60
    assert act["status"] == "STOP"  # lag, offsets unchanged, nobody consuming
    assert act["workers_alive"] == 0
    assert act["oldest_age_s"] > 1.0

    # Kafka's own tool, against what the monitor printed: equal within what is in flight.
    groups = [f"{wf}.plan", f"{wf}.act"]
    tools = kafka_tools_lag(groups, client_config.bootstrap_servers)
    compared = 0
    for stage in (plan, act):
        slack = stage["in_flight"]
        for p in stage["partitions"]:
            theirs = tools.get((stage["group"], p["topic"], p["partition"]))
            if theirs is not None:
                compared += 1
                assert abs(p["lag"] - theirs) <= slack, (stage["stage"], p, theirs)
    assert compared >= 6, tools  # act's three partitions and plan's standard lane at least


def test_serve_exports_prometheus_series_json_and_a_status_page(scene: PausedScene) -> None:
    proc = subprocess.Popen(
        monitor_cmd(scene, "--serve", "0", "--interval", "0.5"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=scene.env, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"no address announced: {line!r}"
        base = f"http://127.0.0.1:{match.group(1)}"
        wf = scene.topology.workflow

        def get(path: str) -> str:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                return str(response.read().decode())

        def act_lag_exported() -> bool:
            text = get("/metrics")
            return 'streams_monitor_lag_records{lane="standard",partition="0",stage="act"' in (
                sorted_labels(text)
            )

        wait_for(act_lag_exported, 30, "the act stage's lag series")
        # Off a terminal the monitor says it is alive, one line per round at first.
        # The first round knows the workers already (act: no worker, STOP; plan's pauses);
        # plan's STALL needs a second reading (no commit progress between the two).
        first = proc.stdout.readline()
        assert "act STOP" in first and "paused downstream 3" in first, first
        lines = [first] + [proc.stdout.readline() for _ in range(2)]
        assert any("plan STALL" in line for line in lines), lines
        exposition = get("/metrics")
        assert check_metrics(exposition) == ""  # Prometheus' own linter: no complaint
        metrics = sorted_labels(exposition)
        act_lag = sum(
            float(v)
            for v in re.findall(
                rf'streams_monitor_lag_records\{{lane="standard",partition="\d",stage="act",'
                rf'topic="{wf}\.act\.standard",workflow="{wf}"\}} (\S+)',
                metrics,
            )
        )
        assert act_lag >= 60
        assert re.search(r'streams_monitor_oldest_queued_age_seconds\{[^}]*stage="act"[^}]*\} '
                         r"([1-9]\d*\.\d+|[1-9]\d*)", metrics)  # fmt: skip
        assert re.search(
            r'streams_monitor_partition_paused\{partition="\d",reason="downstream",stage="plan"',
            metrics,
        )
        assert re.search(
            r'streams_monitor_group_status\{stage="act",status="STOP"[^}]*\} 1', metrics
        )

        api = json.loads(get("/api/status"))
        assert stage_of(api, "plan")["paused"].get("downstream") == 3

        page = get("/")
        assert 'http-equiv="refresh"' in page
        assert "plan" in page and "downstream" in page and "STOP" in page
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_status_page_in_headless_chromium_shows_the_paused_stage(
    scene: PausedScene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a person sees: the page rendered by a real browser names the paused stage, its
    reason and a positive oldest age. STREAMS_MONITOR_SCREENSHOT=path keeps a screenshot."""
    from selenium.webdriver.common.by import By

    proc = subprocess.Popen(
        monitor_cmd(scene, "--serve", "0", "--interval", "0.5"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=scene.env,
        cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match
        url = f"http://127.0.0.1:{match.group(1)}/"
        with headless_chromium(monkeypatch) as browser:

            def plan_judged() -> bool:
                # 503 until the first round; plan is judged from its second reading on (no
                # commit progress between two): load again, as the page's refresh would.
                browser.get(url)
                rows = browser.find_elements(By.CSS_SELECTOR, 'tr[data-stage="plan"] td')
                return len(rows) > 1 and rows[1].text != "OK"

            wait_for(plan_judged, 30, "the status page to judge the plan stage")
            assert "http-equiv" in browser.page_source and "refresh" in browser.page_source
            plan = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="plan"]')
            cells = [c.text for c in plan.find_elements(By.TAG_NAME, "td")]
            assert cells[1] == "STALL", cells
            assert "downstream 3" in plan.find_element(By.CSS_SELECTOR, "td.paused").text
            oldest = plan.find_element(By.CSS_SELECTOR, "td.oldest").text
            assert re.fullmatch(r"\d+[smhd]\S*", oldest) and not oldest.startswith("0"), oldest
            act = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="act"]')
            assert act.find_elements(By.TAG_NAME, "td")[1].text == "STOP"
            assert "no worker" in act.text
            shot = Path(os.environ.get("STREAMS_MONITOR_SCREENSHOT") or tmp_path / "status.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(shot))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
