"""`streams demo`: the triage workflow under overload, governed then naive (and governed
without its degradation ladder, for the comparison), on the local broker; a live view
while it runs; a report with plots at the end; and the checks the demo exists to show.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.config import Settings
from streams.kafka.client_config import ClientConfig
from streams.kafka.cluster import connect

from .live import LiveView
from .report import summary_table, write_report
from .run import Mode, RunData, run_once
from .scenario import full_scenario, quick_scenario
from .summary import GOODPUT_WINDOW_S, Summary, summarize

#: The workflow's bottleneck: the CRM's write rate (runs/s), its crm_write tool in triage.yaml.
NOMINAL_CAPACITY_PER_S = 40.0
#: triage.yaml's ladder rests at the default base level.
BASE_LEVEL = "normal"


@dataclass(frozen=True, slots=True)
class DemoResult:
    report: Path
    summaries: list[Summary]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


#: Governed goodput in every 10 s window of overload, as a share of warm-up capacity at
#: least: the controls keep the bottleneck busy throughout, not on average.
WINDOW_SHARE_OF_CAPACITY = 0.95
#: How far under naive's goodput at the bottleneck over the overload governed's may read
#: and still count as "not below": where both keep the CRM at its 40 writes/s and neither
#: wastes it (a quick run's deadlines outlast its overload), they differ by runs that
#: end after act without a completion (a review that timed out, an expired finish):
#: -0.13 to +0.06 runs/s over ten quick runs (README "What the demo checks"). 1 % of
#: capacity is 0.4 runs/s at 40/s.
NAIVE_MARGIN_SHARE_OF_CAPACITY = 0.01
#: Starved time the samples (every 0.5 s) may show: one sample, a pause being lifted.
STARVED_LIMIT_S = 1.0


def checks(governed: Summary, naive: Summary, overload_s: float) -> list[str]:
    """What the demo must show; each failed check is one line."""
    failures = []
    if governed.urgent_age_p99_overload_s >= governed.urgent_max_queue_age_s:
        failures.append(
            f"governed urgent p99 queue age {governed.urgent_age_p99_overload_s:.1f} s is not "
            f"under the max queue age {governed.urgent_max_queue_age_s:.0f} s"
        )
    lowest = governed.bottleneck_goodput_min_window_per_s
    if lowest < WINDOW_SHARE_OF_CAPACITY * governed.capacity_per_s:
        failures.append(
            f"governed goodput at the bottleneck fell to {lowest:.1f}/s in a "
            f"{GOODPUT_WINDOW_S:.0f} s window of overload (from "
            f"{governed.overload_judged_from_s:.1f} s in), under "
            f"{WINDOW_SHARE_OF_CAPACITY:.0%} of the warm-up capacity "
            f"{governed.capacity_per_s:.1f}/s"
        )
    mine, theirs = (
        governed.bottleneck_goodput_overload_per_s,
        naive.bottleneck_goodput_overload_per_s,
    )
    if theirs - mine > NAIVE_MARGIN_SHARE_OF_CAPACITY * governed.capacity_per_s:
        failures.append(
            f"governed goodput at the bottleneck {mine:.2f}/s in overload is under naive's "
            f"{theirs:.2f}/s by more than {NAIVE_MARGIN_SHARE_OF_CAPACITY:.1%} of capacity"
        )
    # The controls' own share of a goodput dip: the bottleneck idle with work held
    # upstream (a dip with nothing held is the pipeline or the stages after it).
    if governed.bottleneck_starved_overload_s >= STARVED_LIMIT_S:
        failures.append(
            f"governed's controls starved the bottleneck for "
            f"{governed.bottleneck_starved_overload_s:.1f} s of overload (act idle, nothing "
            "queued, plan or retrieve paused)"
        )
    if governed.wasted_executions:
        failures.append(f"governed ran handlers on {governed.wasted_executions} expired runs")
    if governed.accepted_never_finished:
        failures.append(
            f"governed left {governed.accepted_never_finished} admitted runs unfinished"
        )
    if not any(s > 0 for level, s in governed.level_seconds.items() if level != BASE_LEVEL):
        failures.append(
            f"governed never degraded on purpose: its ladder stayed at {BASE_LEVEL} "
            f"({governed.level_seconds})"
        )
    if naive.overload_age_growth_s < 0.4 * overload_s:
        failures.append(
            f"naive queue age grew only {naive.overload_age_growth_s:.1f} s over "
            f"{overload_s:.0f} s of overload"
        )
    return failures + incident_checks(governed, naive)


def incident_checks(governed: Summary, naive: Summary) -> list[str]:
    """The CRM incident: governed stops calling the sick CRM (its breaker opens, probes and
    closes again) and loses fewer runs to it than naive, which hammers it."""
    if not governed.crm_incident_s:
        return []
    failures = []
    if governed.crm_calls_during_incident * 5 > naive.crm_calls_during_incident:
        failures.append(
            f"governed made {governed.crm_calls_during_incident} calls to the sick CRM, not "
            f"far fewer than naive's {naive.crm_calls_during_incident}"
        )
    transitions = governed.crm_breaker_transitions
    if not (transitions.get("closed->open") and transitions.get("half_open->closed")):
        failures.append(f"governed's CRM breaker did not open and close again: {transitions}")
    governed_x = governed.crm_retry_amplification_incident
    naive_x = naive.crm_retry_amplification_incident
    if governed_x is not None and governed_x > 1.1:
        failures.append(
            f"governed retries amplified the calls to the sick CRM {governed_x:.2f}x, over 1.1x"
        )
    if governed_x is not None and naive_x is not None and naive_x <= governed_x:
        failures.append(
            f"naive's retry amplification {naive_x:.2f}x is not above governed's {governed_x:.2f}x"
        )
    if governed.runs_lost_to_crm >= naive.runs_lost_to_crm:
        failures.append(
            f"governed lost {governed.runs_lost_to_crm} runs to the CRM incident, naive "
            f"{naive.runs_lost_to_crm}"
        )
    return failures


def run_demo(
    settings: Settings,
    *,
    quick: bool,
    live: bool,
    out_root: Path,
    console: Console,
    client_file: Path | None = None,
    compare_ladder: bool | None = None,
) -> DemoResult:
    """`client_file`: a client.properties file (--client-config, README "Secured
    clusters"); without one, and without a cluster named, the local broker.
    `compare_ladder` (default: the full demo only) adds a third run, governed without
    the degradation ladder, for the report's comparison."""
    sys.path.insert(0, str(Path.cwd()))
    sim: Any = importlib.import_module("topology.sim")
    deps = sim.deps
    client = connect(settings, client_id="streams-demo", file=client_file)
    scenario = (quick_scenario if quick else full_scenario)(NOMINAL_CAPACITY_PER_S)
    time_scale = 0.2 if quick else 1.0
    # The demo's own view tells the story; the workers' logs would drown it. Restored
    # after, so a caller's logging (a test process, a notebook) is left as it was.
    streams_log = logging.getLogger("streams")
    level = streams_log.level
    streams_log.setLevel(logging.ERROR)
    # Except a stuck loop: that explains a dip in the run, so it is said, with its stack.
    watch_log = logging.getLogger("streams.runtime.loop_watch")
    watch_level = watch_log.level
    watch_log.setLevel(logging.WARNING)
    runs: list[RunData] = []
    modes: list[Mode] = ["governed", "naive"]
    if compare_ladder if compare_ladder is not None else not quick:
        modes.append("unladdered")
    try:
        for mode in modes:
            console.print(f"[bold]{mode}[/] run: {scenario.seconds:.0f} s of scripted load + drain")
            runs.append(_run(mode, client, scenario, deps, time_scale, live, console))
    finally:
        streams_log.setLevel(level)
        watch_log.setLevel(watch_level)
    summaries = [summarize(r) for r in runs]
    out = out_root / time.strftime("%Y%m%d-%H%M%S")
    report = write_report(out, runs, summaries)
    overload = next(p for p in scenario.phases if p.name == "overload").seconds
    failures = checks(summaries[0], summaries[1], overload)
    _print_summary(console, summaries)
    return DemoResult(report, summaries, failures)


def _run(
    mode: Mode, client: ClientConfig, scenario: Any, deps: Any, time_scale: float,
    live: bool, console: Console,
) -> RunData:  # fmt: skip
    def bottleneck() -> int:
        return int(deps.crm.writes_total)

    if not live:
        return run_once(
            mode, client, scenario, deps=deps, bottleneck_done=bottleneck, time_scale=time_scale
        )
    with LiveView(console) as view:
        return run_once(
            mode, client, scenario, deps=deps, bottleneck_done=bottleneck,
            time_scale=time_scale, on_tick=view.update,
        )  # fmt: skip


def _print_summary(console: Console, summaries: list[Summary]) -> None:
    rows = summary_table(summaries)
    table = Table(*rows[0], width=78)
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)
