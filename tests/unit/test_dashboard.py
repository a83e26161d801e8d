"""deploy/grafana/dashboards/streams.json: every query parses as PromQL and reads only
series streams defines (or the recording rules of deploy/prometheus/); lag and age sit
side by side per stage; pauses, decisions and dead letters have panels; the layout does
not overlap; the committed JSON is what deploy/grafana/dashboard.py builds."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.metric_inventory import defined_sample_names
from tests.promql_names import grafana_to_promql, series_names

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streams.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def _recorded() -> set[str]:
    names = set()
    for path in (ROOT / "deploy" / "prometheus").glob("*.yml"):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


def _variable_queries() -> list[str]:
    queries = []
    for variable in _dashboard()["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        queries.append(match.group(1))
    return queries


def test_every_query_reads_only_series_that_exist() -> None:
    known = defined_sample_names() | _recorded()
    exprs = [e for panel in _panels() for e in _exprs(panel)] + _variable_queries()
    assert len(exprs) >= 20
    for expr in exprs:
        unknown = series_names(grafana_to_promql(expr)) - known
        assert unknown == set(), (expr, unknown)


def test_the_check_catches_a_metric_that_does_not_exist() -> None:
    expr = 'sum(rate(streams_dead_letter_total{workflow="$workflow"}[$__rate_interval]))'
    assert series_names(grafana_to_promql(expr)) - defined_sample_names() == {
        "streams_dead_letter_total"
    }


def test_lag_and_age_side_by_side_in_a_row_repeated_per_stage() -> None:
    panels = _dashboard()["panels"]
    (row_index,) = [i for i, p in enumerate(panels) if p.get("repeat") == "stage"]
    row = panels[row_index]
    assert row["type"] == "row"
    following = panels[row_index + 1 : row_index + 3]
    lag, age = following
    assert any("lag_records" in e for e in _exprs(lag)), lag["title"]
    assert any("oldest_queued_age_seconds" in e for e in _exprs(age)), age["title"]
    assert lag["gridPos"]["y"] == age["gridPos"]["y"]
    assert lag["gridPos"]["x"] + lag["gridPos"]["w"] == age["gridPos"]["x"]
    # Per lane on both sides, and each against the stage's own bound.
    assert any("by (lane)" in e for e in _exprs(lag))
    assert any("by (lane)" in e for e in _exprs(age))
    assert any("stage_max_lag_records" in e for e in _exprs(lag))
    assert any("max_queue_age_seconds" in e for e in _exprs(age))


@pytest.mark.parametrize(
    "series",
    [
        "streams_partition_paused",  # pauses
        "streams_pause_events_total",
        "streams_intake_decisions_total",  # decisions
        "streams_dead_letters_total",  # dead letters
        "streams_retries_total",  # retries by reason
        "streams_monitor_retries_total",
        "streams_escalations_total",  # escalations
        "streams_monitor_escalations_total",
        "streams_monitor_review_pending",  # review queue
        "streams_monitor_review_oldest_pending_age_seconds",
        "streams_tool_breaker_state",  # breakers
        "streams_monitor_tool_breakers",
    ],
)
def test_a_panel_shows(series: str) -> None:
    assert any(series in e for panel in _panels() for e in _exprs(panel))


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_panel_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in provisioned}
    for panel in _panels():
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert {t["datasource"]["uid"] for t in panel["targets"]} <= uids, panel["title"]
    for variable in _dashboard()["templating"]["list"]:
        assert variable["datasource"]["uid"] in uids


def test_dashboard_json_is_what_the_generator_builds() -> None:
    spec = importlib.util.spec_from_file_location("grafana_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), "run deploy/grafana/dashboard.py"
