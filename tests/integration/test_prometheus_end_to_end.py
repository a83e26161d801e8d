"""A real Prometheus (Debian's `prometheus` package) scraping a real worker, intake and
monitor, with deploy/prometheus/alerts.yml and thresholds rendered for the test's
workflow: every rule evaluates without error on real series, StreamsWorkerMissing goes
pending for the stage that has no worker (and only for it), every dashboard query runs
and returns series, and the KEDA age query returns a value. This is the check that
names alone cannot give: label sets that really match (`on (workflow, stage)`,
`group_left`) and queries Prometheus itself accepts.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import publish
from streams.topology import Topology

from .intake_helpers import http_server
from .metrics_processes import OTHER_LOOPBACK, free_port, running, streams_argv, workflow_file
from .process_helpers import REPO_ROOT
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DEPLOY = REPO_ROOT / "deploy"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        from tests.promtool import promtool

        promtool()  # fails (or skips, if allowed) with the install hint
        pytest.fail("prometheus not found: install it with `apt-get install prometheus`")
    return found


#: Series of outcomes the scene does not cause (see the dashboard check below).
NOT_CAUSED_HERE = re.compile(
    r"streams_(monitor_)?(retries_total|retry_budget_exhausted_total|escalations_total|review_"
    r"|operator_paused|tool_forced_open)"  # no operator pauses a stage or forces a tool here
)


class PromAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result

    def wait_for(self, expr: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                result = self.query(expr)
            except OSError:
                result = []  # not listening yet
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {expr} within {timeout_s} s")


def _dashboard_exprs(workflow: str) -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streams.json").read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", "30s")
                .replace("$workflow", workflow)
                .replace("$stage", "plan")
                .replace("$lane", ".*")
                .replace("$tool", ".*")
            )
            exprs.append((panel["title"], expr))
    return exprs


def _write_config(tmp_path: Path, topology: Topology, targets: dict[str, str]) -> tuple[Path, Path]:
    render = _load("deploy_render", DEPLOY / "render.py")
    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text(yaml.safe_dump(render.thresholds(topology)))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml"), str(thresholds)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path, thresholds


def test_rules_dashboard_and_keda_queries_on_real_scrapes(
    admin: Admin, bootstrap: str, client_config: ClientConfig, tmp_path: Path
) -> None:
    binary = _prometheus_binary()
    topology, topology_path = workflow_file(admin, tmp_path)
    wf = topology.workflow
    worker_port, monitor_port = free_port(OTHER_LOOPBACK), free_port(OTHER_LOOPBACK)
    prom_port = free_port("127.0.0.1")
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    worker = streams_argv("worker", str(topology_path), "--stage", "plan")
    worker += ["--metrics-port", str(worker_port), "--metrics-host", OTHER_LOOPBACK]
    monitor = streams_argv("monitor", str(topology_path), "--serve", str(monitor_port))
    monitor += ["--host", OTHER_LOOPBACK, "--interval", "0.5"]
    intake = Intake(topology, client_config).start()
    try:
        with (
            http_server(intake) as intake_url,
            running(worker, tmp_path / "worker.log", env),
            running(monitor, tmp_path / "monitor.log", env),
        ):
            config, _ = _write_config(
                tmp_path,
                topology,
                {
                    "streams-workers": f"{OTHER_LOOPBACK}:{worker_port}",
                    "streams-monitor": f"{OTHER_LOOPBACK}:{monitor_port}",
                    "streams-intake": intake_url.removeprefix("http://"),
                },
            )
            server = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/tsdb"]
            server += [f"--web.listen-address=127.0.0.1:{prom_port}"]
            with running(server, tmp_path / "prometheus.log", {}):
                api = PromAPI(f"http://127.0.0.1:{prom_port}")
                _traffic(intake_url, client_config, topology)
                _check(api, wf, topology)
    finally:
        intake.close()


def _traffic(intake_url: str, client_config: ClientConfig, topology: Topology) -> None:
    with httpx.Client(timeout=10) as http:
        url = f"{intake_url}/v1/workflows/{topology.workflow}/runs"
        for i in range(8):  # 5 fit the intake's bound, the rest are rejected
            http.post(url, json={"tenant": "acme", "payload": {"n": i}})
    topic = f"{topology.workflow}.plan.standard"
    publish(client_config, topic, events(topology, "plan", 2, age_s=120))  # expired


def _check(api: PromAPI, wf: str, topology: Topology) -> None:
    api.wait_for('count(up{job=~"streams.*"} == 1) == 3')
    api.wait_for(f'streams_records_total{{workflow="{wf}", outcome="emitted"}} > 0')
    api.wait_for(f'streams_monitor_lane_lag_records{{workflow="{wf}", stage="act"}} > 0')
    api.wait_for(f'streams_dead_letters_total{{workflow="{wf}"}} > 0')
    time.sleep(3)  # a few more scrapes and rule rounds: rate() needs two samples

    # Every rule evaluates cleanly on real series (no many-to-many match, no bad type).
    groups = api.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 18
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))

    # act has no worker: its threshold series exists and no worker reports it.
    alerts = [
        a["labels"]
        for a in api.get("/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == "StreamsWorkerMissing" and a["labels"].get("workflow") == wf
    ]
    assert [a["stage"] for a in alerts] == ["act"], alerts

    # Every dashboard query runs and returns series on a workflow with traffic (a few
    # rounds allowed: the rates need two samples of every counter).
    # Queries of outcomes this scene never causes (retries, escalations, review stages)
    # must run (PromAPI.get asserts success) but may be empty; their names are checked
    # against the inventory in tests/unit/test_dashboard.py, their values in the
    # monitor's own tests.
    deadline = time.monotonic() + 30
    while True:
        empty = [
            (title, e)
            for title, e in _dashboard_exprs(wf)
            if not api.query(e) and not NOT_CAUSED_HERE.search(e)
        ]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert empty == []

    # The KEDA age trigger's query (deploy/render.py) returns the monitor's value.
    render = sys.modules["deploy_render"]
    for stage in topology.stages.values():
        (trigger,) = [
            t
            for t in render.scaled_object(topology, stage)["spec"]["triggers"]
            if t["type"] == "prometheus"
        ]
        assert api.query(trigger["metadata"]["query"]), stage.name
