"""`streams demo --quick` end to end on the real broker: the report exists and its data show
what the demo is for (governed holds urgent queue age and goodput, wastes nothing, loses
nothing; naive lets queue age grow through the overload)."""

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
    for name in ("report.md", "summary.json", "timeline.json", "queue_age.png", "goodput.png"):
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
    report = (run_dir / "report.md").read_text()
    assert "| goodput in overload (runs/s) |" in report
