"""`streams demo --quick` end to end on the real broker: the report exists and its data show
what the demo is for (governed holds urgent queue age and goodput, wastes nothing, loses
nothing; naive lets queue age grow through the overload; in the CRM incident governed's
breaker opens, it stops calling the sick CRM and resumes after, while naive hammers it and
loses the runs it pulls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_quick_demo_shows_governed_against_naive(
    tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    result = CliRunner().invoke(app, ["demo", "--quick", "--no-live", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [run_dir] = list(tmp_path.iterdir())
    for name in (
        "report.md", "summary.json", "timeline.json", "queue_age.png", "goodput.png",
        "crm_incident.png",
    ):  # fmt: skip
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    governed, naive = summary["governed"], summary["naive"]
    assert governed["capacity_per_s"] > 0
    assert governed["urgent_age_p99_overload_s"] < governed["urgent_max_queue_age_s"]
    assert governed["goodput_overload_per_s"] >= 0.9 * governed["capacity_per_s"]
    assert governed["wasted_executions"] == 0
    assert governed["accepted_never_finished"] == 0
    assert governed["decisions"].get("rejected", 0) > 0  # it said no to work it could not do
    assert naive["overload_age_growth_s"] >= 0.4 * 16  # quick overload lasts 16 s
    assert naive["accepted_never_finished"] > 0
    # The CRM incident: both runs met the same sick CRM for the same time.
    assert governed["crm_incident_s"] == pytest.approx(4.0)
    assert naive["crm_incident_s"] == pytest.approx(4.0)
    # Governed stops calling it once its breaker opens (a few probes after); naive hammers.
    assert naive["crm_calls_during_incident"] >= 100  # ~40 writes/s for 4 s
    assert governed["crm_calls_during_incident"] * 5 <= naive["crm_calls_during_incident"]
    # Governed's breaker opened, probed and closed again; it ends closed.
    transitions = governed["crm_breaker_transitions"]
    assert transitions.get("closed->open", 0) >= 1, transitions
    assert transitions.get("half_open->closed", 0) >= 1, transitions
    states = [state for _t, state in governed["crm_breaker_timeline"]]
    assert "open" in states and states[-1] == "closed", states
    assert naive["crm_breaker_transitions"] == {}  # a plain loop has no breaker
    # Runs lost to it: naive loses every run it pulls during the incident, governed few.
    assert naive["runs_lost_to_crm"] >= 100
    # Governed loses the writes that opened the breaker and the calls then waiting for a
    # token (at most act's 16): ~30 at worst against naive's ~160.
    assert governed["runs_lost_to_crm"] * 3 <= naive["runs_lost_to_crm"]
    timeline = json.loads((run_dir / "timeline.json").read_text())
    assert any(s["tools"].get("crm_write") == "open" for s in timeline["governed"]["samples"])
    report = (run_dir / "report.md").read_text()
    assert "| goodput in overload (runs/s) |" in report
    assert "| calls to the sick CRM during the incident |" in report
    assert "| runs lost to the CRM incident |" in report
