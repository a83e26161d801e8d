"""The streams Grafana dashboard, as code: writes deploy/grafana/dashboards/streams.json.

Owns the dashboard's layout and queries; must not invent metric names (tests/unit/
test_dashboard.py checks every series a query reads against the metrics streams defines,
and that the committed JSON is this script's output):

    .venv/bin/python deploy/grafana/dashboard.py

One row per stage (repeated over the `stage` variable) puts lag and oldest queued age side
by side, each against the stage's bound; then pauses, intake decisions, dead letters,
retries and escalations, review queues and the tools (breakers, slots, waits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "streams.json"
#: The datasource uid provisioning/datasources/prometheus.yml gives Prometheus.
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
WIDTH = 24  # Grafana's grid is 24 columns wide
WF = 'workflow="$workflow"'
STAGE = f'{WF}, stage=~"$stage"'
RATE = "[$__rate_interval]"

Panel = dict[str, Any]


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    stack: bool = False,
) -> Panel:
    refs = "ABCDEFGH"
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend, refs[i]) for i, (expr, legend) in enumerate(queries)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"stacking": {"mode": "normal" if stack else "none"}},
            },
            "overrides": [_dashed_bound()],
        },
        "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["max"]}},
        "gridPos": {"w": width, "h": 8},
    }


def _dashed_bound() -> dict[str, Any]:
    # Series named "max ..." are a stage's configured bound: draw them as a dashed line.
    return {
        "matcher": {"id": "byRegexp", "options": "^max .*"},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
        ],
    }


def stat(title: str, expr: str, *, unit: str = "short", description: str = "") -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, title, "A")],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "gridPos": {"w": 4, "h": 4},
    }


@dataclass
class Layout:
    """Places panels left to right, wrapping at the grid's width; rows start a new line."""

    panels: list[Panel] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def row(self, title: str, *, repeat: str | None = None) -> None:
        self._newline()
        panel: Panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
        if repeat:
            panel["repeat"] = repeat
        panel["gridPos"] = {"x": 0, "y": self.y, "w": WIDTH, "h": 1}
        self._append(panel)
        self.y += 1

    def add(self, *panels: Panel) -> None:
        for panel in panels:
            w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
            if self.x + w > WIDTH:
                self._newline()
            panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
            self._append(panel)
            self.x += w
            self.line_height = max(self.line_height, h)

    def _newline(self) -> None:
        self.y += self.line_height
        self.x, self.line_height = 0, 0

    def _append(self, panel: Panel) -> None:
        panel["id"] = len(self.panels) + 1
        self.panels.append(panel)


def variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,  # on time range change: stages and lanes come and go
        "multi": multi,
        "includeAll": multi,
        "current": {"text": "All", "value": "$__all"} if multi else {},
        "sort": 1,
    }


def build() -> dict[str, Any]:
    layout = Layout()
    layout.row("Overview")
    layout.add(
        stat("Records finished /s", f"sum(rate(streams_records_total{{{WF}}}{RATE}))"),
        stat("Dead letters /s", f"sum(rate(streams_dead_letters_total{{{WF}}}{RATE}))"),
        stat(
            "Oldest queued age",
            f"max(streams_oldest_queued_age_seconds{{{WF}}})",
            unit="s",
            description="Oldest record any worker of the workflow holds (buffered or in flight).",
        ),
        stat("Paused partitions", f"sum(streams_partition_paused{{{WF}}})"),
        stat("Stalled partitions", f"sum(streams_stalled_partitions{{{WF}}})"),
        stat(
            "Intake rejected share",
            f'sum(rate(streams_intake_decisions_total{{{WF}, outcome="rejected"}}{RATE}))'
            f" / sum(rate(streams_intake_decisions_total{{{WF}}}{RATE}))",
            unit="percentunit",
        ),
    )

    # Lag and age side by side, per stage (the row repeats for each selected stage).
    one_stage = f'{WF}, stage="$stage"'
    layout.row("Stage $stage: lag and age", repeat="stage")
    layout.add(
        timeseries(
            "Lag: $stage",
            [
                (f"sum by (topic) (streams_lag_records{{{one_stage}}})", "{{topic}} (workers)"),
                (
                    "sum by (lane) (streams_monitor_lane_lag_records"
                    f'{{{one_stage}, lane=~"$lane"}})',
                    "{{lane}} (monitor)",
                ),
                (f"max(streams:stage_max_lag_records{{{one_stage}}})", "max lag"),
            ],
            description="Records past the committed offset. Workers report their own "
            "partitions per input topic (one per lane); the monitor reads the whole group "
            "from Kafka per lane, with or without workers.",
        ),
        timeseries(
            "Oldest queued age: $stage",
            [
                (
                    "max by (lane) (streams_oldest_queued_age_seconds"
                    f'{{{one_stage}, lane=~"$lane"}})',
                    "{{lane}} (buffered)",
                ),
                (
                    "max by (lane) (streams_monitor_lane_oldest_queued_age_seconds"
                    f'{{{one_stage}, lane=~"$lane"}})',
                    "{{lane}} (monitor: unconsumed included)",
                ),
                (f"max(streams:max_queue_age_seconds{{{one_stage}}})", "max queue age"),
            ],
            unit="s",
            description="Age of the oldest record waiting, per lane. Records past the "
            "stage's max_queue_age_s are dead-lettered as expired.",
        ),
        timeseries(
            "Finished by outcome: $stage",
            [
                (
                    f"sum by (outcome) (rate(streams_records_total{{{one_stage}}}{RATE}))",
                    "{{outcome}}",
                )
            ],
            unit="ops",
            width=8,
            stack=True,
        ),
        timeseries(
            "In flight and limit: $stage",
            [
                (f"sum(streams_in_flight{{{one_stage}}})", "in flight"),
                (f"sum(streams_concurrency_limit{{{one_stage}}})", "max concurrency"),
            ],
            width=8,
        ),
        timeseries(
            "Handler latency: $stage",
            [
                (
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(streams_handler_latency_seconds_bucket{{{one_stage}}}{RATE})))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
            width=8,
        ),
    )

    layout.row("Pauses")
    layout.add(
        timeseries(
            "Paused partitions by stage and reason",
            [
                (
                    f"sum by (stage, reason) (streams_partition_paused{{{STAGE}}})",
                    "{{stage}}: {{reason}}",
                )
            ],
            stack=True,
            width=8,
        ),
        timeseries(
            "Pause events /s",
            [
                (
                    f"sum by (stage, reason) (rate(streams_pause_events_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{reason}}",
                )
            ],
            unit="ops",
            width=8,
            description="Partitions going from fetching to paused. Flapping shows here.",
        ),
        timeseries(
            "Downstream pressure as each stage sees it",
            [
                (
                    f"max by (stage, downstream_stage) "
                    f"(streams_downstream_oldest_age_seconds{{{STAGE}}})",
                    "{{stage}} sees {{downstream_stage}}",
                )
            ],
            unit="s",
            width=8,
        ),
    )

    layout.row("Intake decisions")
    decisions = f"streams_intake_decisions_total{{{WF}}}"
    layout.add(
        timeseries(
            "Decisions /s by outcome",
            [(f"sum by (outcome) (rate({decisions}{RATE}))", "{{outcome}}")],
            unit="ops",
            width=8,
            stack=True,
        ),
        timeseries(
            "Rejections /s by reason",
            [
                (
                    "sum by (reason) (rate(streams_intake_decisions_total"
                    f'{{{WF}, outcome="rejected"}}{RATE}))',
                    "{{reason}}",
                )
            ],
            unit="ops",
            width=8,
        ),
        timeseries(
            "Admitted runs not finished, by lane",
            [
                (f"sum by (lane) (streams_intake_queued_runs{{{WF}}})", "{{lane}} queued"),
                (f"max(streams_intake_saturated{{{WF}}})", "saturated (1)"),
            ],
            width=8,
        ),
        timeseries(
            "Oldest admitted, unfinished run, by lane",
            [
                (
                    f"max by (lane) (streams_intake_oldest_queued_age_seconds{{{WF}}})",
                    "{{lane}}",
                )
            ],
            unit="s",
        ),
        timeseries(
            "Decision latency",
            [
                (
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(streams_intake_decision_seconds_bucket{{{WF}}}{RATE})))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.99)
            ],
            unit="s",
        ),
    )

    layout.row("Dead letters")
    layout.add(
        timeseries(
            "Dead letters /s by stage and reason",
            [
                (
                    f"sum by (stage, reason) (rate(streams_dead_letters_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{reason}}",
                )
            ],
            unit="ops",
            width=8,
            stack=True,
        ),
        timeseries(
            "Dead-letter share in the valve's window",
            [(f"max by (stage) (streams_dead_letter_ratio{{{STAGE}}})", "{{stage}}")],
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Dead-letter valve not ok",
            [
                (
                    f'max by (stage, state) (streams_dead_letter_valve{{{STAGE}, state!="ok"}})',
                    "{{stage}}: {{state}}",
                )
            ],
            width=8,
            description="1 while a stage's valve warns or has tripped (the worker stops).",
        ),
    )

    layout.row("Retries and escalations")
    layout.add(
        timeseries(
            "Retries /s by stage and reason",
            [
                (
                    f"sum by (stage, reason) (rate(streams_retries_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{reason}} (workers)",
                ),
                (
                    "sum by (stage, reason) "
                    f"(rate(streams_monitor_retries_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{reason}} (monitor)",
                ),
            ],
            unit="ops",
            width=8,
            description="Failed records written to a retry tier. The monitor reads them from "
            "the retry-tier topics (their streams.retry.* headers), with or without workers.",
        ),
        timeseries(
            "Retries /s by tier, and budget refusals",
            [
                (
                    f"sum by (tier) (rate(streams_retries_total{{{STAGE}}}{RATE}))",
                    "tier {{tier}}s (workers)",
                ),
                (
                    f"sum by (tier) (rate(streams_monitor_retries_total{{{STAGE}}}{RATE}))",
                    "tier {{tier}}s (monitor)",
                ),
                (
                    "sum by (stage, scope) "
                    f"(rate(streams_retry_budget_exhausted_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: refused by the {{scope}} budget",
                ),
            ],
            unit="ops",
            width=8,
            description="A refused retry is dead-lettered (reason retry_budget_exhausted).",
        ),
        timeseries(
            "Escalations /min by stage and reason",
            [
                (
                    "60 * sum by (stage, reason) "
                    f"(rate(streams_escalations_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{reason}} (workers)",
                ),
                (
                    "60 * sum by (stage, reason) "
                    f"(rate(streams_monitor_escalations_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{reason}} (monitor)",
                ),
            ],
            width=8,
            description="Runs handed to people (W.escalations): `streams escalations list`.",
        ),
    )

    layout.row("Review queues")
    layout.add(
        timeseries(
            "Pending reviews and room",
            [
                (
                    f"max by (stage) (streams_monitor_review_pending{{{STAGE}}})",
                    "{{stage}} pending",
                ),
                (
                    f"sum by (stage) (streams_review_pending{{{STAGE}}})",
                    "{{stage}} pending (workers)",
                ),
                (
                    f"max by (stage) (streams_monitor_review_room{{{STAGE}}})",
                    "max {{stage}} room",
                ),
            ],
            width=8,
            description="A full queue pauses the stage before it. Room: max_pending per "
            "live review worker (W.reviews, read by the monitor).",
        ),
        timeseries(
            "Oldest pending review",
            [
                (
                    "max by (stage) "
                    f"(streams_monitor_review_oldest_pending_age_seconds{{{STAGE}}})",
                    "{{stage}}",
                ),
                (
                    f"max by (stage) (streams_monitor_review_max_wait_seconds{{{STAGE}}})",
                    "max wait {{stage}}",
                ),
            ],
            unit="s",
            width=8,
        ),
        timeseries(
            "Reviews decided /min",
            [
                (
                    f"60 * max by (stage) (streams_monitor_review_clear_rate{{{STAGE}}})",
                    "{{stage}} by people (rate window)",
                ),
                (
                    "60 * sum by (stage, outcome, by) "
                    f"(rate(streams_review_decisions_total{{{STAGE}}}{RATE}))",
                    "{{stage}}: {{outcome}} by {{by}}",
                ),
            ],
            width=8,
        ),
    )

    layout.row("Tools")
    tool = f'{WF}, tool=~"$tool"'
    layout.add(
        timeseries(
            "Breaker state by tool",
            [
                (
                    f'max by (tool, state) (streams_tool_breaker_state{{{tool}, state!="closed"}})',
                    "{{tool}}: {{state}}",
                ),
                (
                    "sum by (tool, state) "
                    f'(streams_monitor_tool_breakers{{{tool}, state!="closed"}})',
                    "{{tool}}: {{state}} (monitor: workers in it)",
                ),
            ],
            width=8,
            description="1 while a tool's circuit breaker is open or half-open (per worker, "
            "max over the workers): calls fail fast, the stage holds dispatch. The monitor "
            "counts the live workers in each state from their pressure reports.",
        ),
        timeseries(
            "Tool calls in flight, waiting, and the limit",
            [
                (f"sum by (tool) (streams_tool_in_flight{{{tool}}})", "{{tool}} in flight"),
                (f"sum by (tool) (streams_tool_waiting{{{tool}}})", "{{tool}} waiting"),
                (
                    f"sum by (tool) (streams_tool_concurrency_limit{{{tool}}})",
                    "max {{tool}} slots",
                ),
            ],
            width=8,
        ),
        timeseries(
            "Wait for a slot and a token, p95",
            [
                (
                    "histogram_quantile(0.95, sum by (tool, le) "
                    f"(rate(streams_tool_wait_seconds_bucket{{{tool}}}{RATE})))",
                    "{{tool}}",
                )
            ],
            unit="s",
            width=8,
        ),
    )

    layout.row("Degradation and operator controls")
    layout.add(
        timeseries(
            "Degradation level",
            [
                (
                    f"max by (level) (streams_monitor_degradation_level{{{WF}}})",
                    "{{level}} (monitor)",
                ),
                (f"max by (level) (streams_degradation_level{{{WF}}})", "{{level}} (workers)"),
            ],
            width=8,
            description='1 for the level the workflow runs at (README "Degradation"), from '
            "W.control as the monitor reads it and as each worker acts on it.",
        ),
        timeseries(
            "Operator controls in force",
            [
                (f"max (streams_monitor_degradation_forced{{{WF}}})", "level forced"),
                (
                    f"max by (stage) (streams_monitor_operator_paused{{{WF}}})",
                    "{{stage}} paused by an operator",
                ),
                (
                    f"max by (tool) (streams_monitor_tool_forced_open{{{WF}}})",
                    "{{tool}} forced open",
                ),
            ],
            width=8,
            description="streams control degrade / pause / tool --open; who and why are on "
            "the monitor's status page and in `streams control W show`.",
        ),
        timeseries(
            "Handler calls /s by level",
            [
                (
                    "sum by (stage, level) "
                    f"(rate(streams_degradation_calls_total{{{STAGE}}}{RATE}))",
                    "{{stage}} at {{level}}",
                )
            ],
            unit="ops",
            width=8,
        ),
    )

    return {
        "uid": "streams",
        "title": "streams: lag, age, pauses, decisions, dead letters",
        "tags": ["streams", "kafka"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "timezone": "",
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                variable(
                    "workflow",
                    "Workflow",
                    "label_values(streams_in_flight, workflow)",
                    multi=False,
                ),
                variable(
                    "stage",
                    "Stage",
                    f"label_values(streams_in_flight{{{WF}}}, stage)",
                    multi=True,
                ),
                variable(
                    "lane",
                    "Lane",
                    f"label_values(streams_oldest_queued_age_seconds{{{WF}}}, lane)",
                    multi=True,
                ),
                variable(
                    "tool",
                    "Tool",
                    f"label_values(streams_tool_in_flight{{{WF}}}, tool)",
                    multi=True,
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    print(OUT)
