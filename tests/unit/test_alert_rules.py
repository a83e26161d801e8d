"""deploy/prometheus/alerts.yml: promtool accepts it, its unit tests pass (alerts_test.yml,
`promtool test rules`), every alert says what to do, is tested firing and quiet, and reads
only series streams defines; thresholds.yml is what deploy/render.py makes of the example
topology."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.metric_inventory import defined_sample_names
from tests.promql_names import series_names
from tests.promtool import run_promtool

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
THRESHOLDS = PROMETHEUS / "thresholds.yml"
#: Prometheus' own series.
EXTERNAL_SERIES = {"up"}


def _rules(path: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules(ALERTS) if "alert" in rule]


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_promtool_checks_the_rules_clean() -> None:
    code, output = run_promtool("check", "rules", ALERTS, THRESHOLDS)
    assert code == 0, output
    assert "WARNING" not in output.upper(), output


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    code, output = run_promtool("test", "rules", PROMETHEUS / "alerts_test.yml")
    assert code == 0, output
    assert "SUCCESS" in output, output


def test_every_alert_has_a_runbook_a_summary_and_a_severity() -> None:
    alerts = _alerts()
    assert len(alerts) >= 8
    for alert in alerts:
        annotations = alert.get("annotations", {})
        assert annotations.get("runbook", "").strip(), alert["alert"]
        assert "\n" not in annotations["runbook"].strip(), alert["alert"]  # one line
        assert annotations.get("summary", "").strip(), alert["alert"]
        assert alert.get("labels", {}).get("severity") in {"warning", "critical"}, alert


def test_the_issue_asks_for_these_alerts() -> None:
    names = {alert["alert"] for alert in _alerts()}
    assert {
        "StreamsQueueAgeOverMax",  # oldest queued age over the stage's max, per lane
        "StreamsQueueAgeGrowing",  # age growing for N minutes
        "StreamsPartitionStalled",
        "StreamsDeadLetterRateHigh",
        "StreamsIntakeRejectingLong",
        "StreamsWorkerMissing",
        "StreamsToolBreakerOpen",
        "StreamsLagOverMax",
        "StreamsDeadLetterValveTripped",
        "StreamsMonitorReadingFailing",
        "StreamsRetryRateHigh",  # retries over a tenth of the records a stage finishes
        "StreamsRetryBudgetExhausted",  # retries refused by a budget
        "StreamsEscalationRateHigh",
        "StreamsReviewQueueFull",
        "StreamsReviewOlderThanMaxWait",
    } <= names


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert names - fired == set(), "alerts never seen firing in alerts_test.yml"
    assert names - quiet == set(), "alerts never seen quiet in alerts_test.yml"


def test_rules_read_only_series_that_exist() -> None:
    recorded = {rule["record"] for rule in _rules(ALERTS) + _rules(THRESHOLDS) if "record" in rule}
    known = defined_sample_names() | recorded | EXTERNAL_SERIES
    for rule in _rules(ALERTS):
        unknown = series_names(rule["expr"]) - known
        assert unknown == set(), (rule.get("alert") or rule.get("record"), unknown)


def test_the_names_check_catches_a_misspelt_metric() -> None:
    assert series_names("max(streams_oldest_queued_age_second)") - defined_sample_names() == {
        "streams_oldest_queued_age_second"
    }


def test_thresholds_are_rendered_from_the_example_topology(tmp_path: Path) -> None:
    _render_module().render(ROOT / "topology" / "example.yaml", tmp_path)
    assert (tmp_path / "prometheus" / "thresholds.yml").read_text() == THRESHOLDS.read_text()
