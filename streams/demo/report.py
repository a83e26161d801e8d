"""The demo's report: a Markdown page, PNG plots and the data behind them (JSON), governed
against naive. Owns presentation only; the numbers come from streams.demo.summary.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the demo runs in terminals and CI without a display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from .run import RunData, Sample
from .summary import (
    Summary,
    bottleneck_windows,
    good_done_s,
    goodput_windows,
    judged_from_s,
    oldest_run_ages,
)

LANES = ("urgent", "standard", "background")
COLORS = {"governed": "tab:green", "naive": "tab:red", "unladdered": "tab:blue"}
#: The ladder's entry-stage condition reads this stage's oldest queued age (triage.yaml).
_ENTRY_STAGE = "plan"


def write_report(out: Path, runs: list[RunData], summaries: list[Summary]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(
        json.dumps({s.mode: s.to_json() for s in summaries}, indent=2)
    )
    (out / "timeline.json").write_text(json.dumps({r.mode: _timeline(r) for r in runs}))
    (out / "runs.json").write_text(json.dumps({r.mode: _finished_runs(r) for r in runs}))
    _plot_ages(out / "queue_age.png", runs)
    _plot_goodput(out / "goodput.png", runs)
    _plot_memory(out / "memory.png", runs)
    _plot_crm_incident(out / "crm_incident.png", runs)
    _plot_retries(out / "retries.png", runs, summaries)
    _plot_review_queue(out / "review_queue.png", runs)
    _plot_bottleneck(out / "bottleneck.png", runs)
    _plot_degradation(out / "degradation.png", runs)
    report = out / "report.md"
    report.write_text(_markdown(summaries))
    return report


def summary_table(summaries: list[Summary]) -> list[tuple[str, ...]]:
    by_mode = {s.mode: s for s in summaries}
    rows: list[tuple[str, ...]] = [("", *by_mode)]

    def row(label: str, fmt: str, attr: str) -> None:
        values = [getattr(s, attr) for s in by_mode.values()]
        rows.append((label, *("-" if v is None else format(v, fmt) for v in values)))

    row("capacity in warm-up (runs/s)", ".1f", "capacity_per_s")
    row("goodput in overload (runs/s)", ".1f", "goodput_overload_per_s")
    row("goodput, lowest 10 s window of overload (runs/s)", ".1f",
        "goodput_overload_min_window_per_s")  # fmt: skip
    row("goodput at the bottleneck in overload (runs/s, at act's time)", ".1f",
        "bottleneck_goodput_overload_per_s")  # fmt: skip
    row("goodput at the bottleneck, lowest 10 s window (runs/s)", ".1f",
        "bottleneck_goodput_min_window_per_s")  # fmt: skip
    row("overload windows judged from (s in: work reached act)", ".1f",
        "overload_judged_from_s")  # fmt: skip
    phases = list(summaries[0].goodput_by_phase) if summaries else []
    for phase in phases:
        rows.append(
            (
                f"goodput in {phase}, finished / at act (runs/s)",
                *(
                    f"{s.goodput_by_phase.get(phase, 0.0):.1f} / "
                    f"{s.bottleneck_goodput_by_phase.get(phase, 0.0):.1f}"
                    for s in by_mode.values()
                ),
            )
        )
    row("bottleneck (CRM writes/s), lowest 10 s window of overload", ".1f",
        "bottleneck_overload_min_window_per_s")  # fmt: skip
    row("bottleneck starved by the controls, overload (s)", ".1f",
        "bottleneck_starved_overload_s")  # fmt: skip
    row("urgent p99 stage queue age, overload (s)", ".1f", "urgent_age_p99_overload_s")
    row("oldest unfinished urgent run, p99 (s)", ".1f", "urgent_oldest_run_p99_overload_s")
    row("urgent latency p50 (s)", ".1f", "urgent_latency_p50_s")
    row("urgent latency p99 (s)", ".1f", "urgent_latency_p99_s")
    row("queue age growth in overload (s)", ".1f", "overload_age_growth_s")
    row("admitted runs", "d", "admitted")
    row("completed", "d", "completed")
    row("dead-lettered", "d", "dead_lettered")
    row("accepted, never finished", "d", "accepted_never_finished")
    row("work on expired runs", "d", "wasted_executions")
    row("peak RSS (MB)", ".0f", "max_rss_mb")
    row("CRM incident (s of failing writes)", ".0f", "crm_incident_s")
    row("calls to the sick CRM during the incident", "d", "crm_calls_during_incident")
    row("runs lost to the CRM incident", "d", "runs_lost_to_crm")
    rows.append(
        ("CRM breaker transitions", *(_transitions(s.crm_breaker_transitions) for s in summaries))
    )
    row("retry amplification during the CRM incident", ".2f", "crm_retry_amplification_incident")
    row("retry amplification over the run", ".2f", "crm_retry_amplification_run")
    row("retries through the tiers", "d", "retries_total")
    rows.append(
        (
            "review queue: peak pending / bound",
            *(f"{s.review_pending_peak} / {_bound(s.review_max_pending)}" for s in summaries),
        )
    )
    row("review queue: oldest pending age, peak (s)", ".1f", "review_oldest_age_peak_s")
    row("act paused: review queue full (s)", ".1f", "act_paused_by_review_s")
    rows.append(("review decisions", *(_counts(s.review_decisions) for s in summaries)))
    rows.append(("escalations by reason", *(_counts(s.escalations) for s in summaries)))
    rows.append(("time at each degradation level (s)", *(_seconds(s) for s in summaries)))
    row("workers and intake at different levels (s)", ".1f", "levels_apart_s")
    return rows


def _seconds(summary: Summary) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in summary.level_seconds.items()) or "-"


def _bound(max_pending: int) -> str:
    return "none" if max_pending >= 10_000 else str(max_pending)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _transitions(counts: dict[str, int]) -> str:
    """ "closed->open 2, ..." in the breaker's order, or "-" (no breaker)."""
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def _markdown(summaries: list[Summary]) -> str:
    rows = summary_table(summaries)
    table = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    table += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    decisions = "\n".join(
        f"- {s.mode}: " + ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))
        for s in summaries
    )
    letters = "\n".join(
        f"- {s.mode}: "
        + (", ".join(f"{k} {v}" for k, v in sorted(s.dead_letters.items())) or "none")
        for s in summaries
    )
    escalations = "\n".join(
        f"- {s.mode}: "
        + (", ".join(f"{k} {v}" for k, v in s.escalations_by_stage.items()) or "none")
        for s in summaries
    )
    breakers = "\n".join(
        f"- {s.mode}: "
        + (" → ".join(f"{state} at {t:.1f} s" for t, state in s.crm_breaker_timeline) or "none")
        for s in summaries
    )
    levels = "\n".join(
        f"- {s.mode}: "
        + (" → ".join(f"{level} at {t:.1f} s" for t, level in s.level_timeline) or "none")
        for s in summaries
        if s.mode != "naive"
    )
    return (
        "# streams demo: governed vs naive\n\n"
        "The same workflow, handlers and offered load, twice: warm-up, a capacity probe, "
        "the LLM 10x slower, offered load at 3x capacity, then a CRM incident at the same "
        "load (its writes fail), recovery, drain. Governed, the handlers call the CRM, the "
        "LLM and vector search through streams' tools (rate and concurrency ceilings, "
        "breakers); naive, they call them directly."
        "\n\n"
        + "\n".join(table)
        + "\n\n## Admission decisions\n\n"
        + decisions
        + "\n\n## Dead letters by reason\n\n"
        + letters
        + "\n\n## The CRM incident\n\n"
        "Writes that reached the CRM while it failed, and the `crm_write` breaker's state "
        "(governed; sampled every 0.5 s, so a short half-open may not show):\n\n"
        + breakers
        + "\n\n![CRM calls and breaker](crm_incident.png)"
        + "\n\n## Retries\n\n"
        "Retry amplification: writes that reached the CRM ÷ first attempts (a write whose "
        "idempotency key the CRM had not seen). Governed retries go through the retry tiers "
        "under budgets (10 % of first attempts); naive, the handler tries again at once, up "
        "to 3 tries in all (a plain loop).\n\n![retries](retries.png)"
        + "\n\n## The review queue\n\n"
        "Pending reviews and the oldest one's age at the approve stage (`kind: review`), "
        "sampled from W.reviews every 0.5 s; governed it holds at most its bound and act "
        "pauses while it is full (approve.saturated); naive has no bound."
        "\n\n![review queue](review_queue.png)"
        + "\n\n## Escalations by reason\n\n"
        + escalations
        + "\n\n## Degradation on purpose\n\n"
        "The workflow's ladder (triage.yaml `degradation:`): `lean` once plan's oldest "
        "queued record is 10 s old (a short prompt, fewer documents, enrich paused, "
        "background runs refused), `essential` while the CRM's breaker is open (one "
        "document, pro customers' refunds reviewed by a person too, standard runs "
        "delayed); each level is left only after `min_dwell_s` under its exit thresholds. "
        "The level over time next to plan's oldest queued age; unladdered (when run) is "
        "the governed run with the ladder removed, the same otherwise.\n\n"
        + levels
        + "\n\n![degradation](degradation.png)"
        + "\n\n## Oldest queued age per lane\n\n![queue age](queue_age.png)\n\n"
        "## Goodput (runs finished within their deadline)\n\nAbove, each run counted when act "
        "(the CRM writes, the capacity) handed it on: what the checks judge; below, when it "
        "finished, people's reviews included.\n\n![goodput](goodput.png)\n\n"
        "## The bottleneck\n\n"
        "act (the CRM writes) over time: calls in flight and its queue (lag), next to the "
        "partitions plan and retrieve held paused and what the intake answered. A dip in "
        "goodput with act's queue empty and the stages before it paused is the controls "
        "starving the bottleneck.\n\n![bottleneck](bottleneck.png)\n\n"
        "## Worker memory\n\n![memory](memory.png)\n"
    )


def _finished_runs(run: RunData) -> dict[str, object]:
    """Every completed run, for a look at where its time went: seconds since the run's
    start when the intake admitted it (the phases' clock; null: not seen), when it was
    created, when act handed it on (null: not seen), when it finished, and its deadline
    (null: none). The first is the load generator's monotonic clock, the others Kafka's
    and the events' wall-clock times: the two agree only if started_wall is the wall
    time at the phases' zero."""

    def since(ms: int | None) -> float | None:
        return None if ms is None else round(ms / 1000 - run.started_wall, 3)

    admitted = run.submissions.admitted
    return {
        "columns": ["lane", "admitted_s", "created_s", "act_done_s", "finished_s", "deadline_s"],
        "runs": [
            [
                c.lane,
                round(admitted[c.run_id][1], 3) if c.run_id in admitted else None,
                since(c.created_ms),
                since(run.bottleneck_done_ms.get(c.run_id)),
                since(c.done_ms),
                since(c.deadline_ms),
            ]
            for c in run.completions
        ],
    }


def _timeline(run: RunData) -> dict[str, object]:
    judged = judged_from_s(run)
    return {
        "phases": run.phases,
        "crm_incident": run.crm_incident,
        "samples": [
            {
                "t": s.t,
                "phase": s.phase,
                "stage_ages": s.stage_ages,
                "queued": s.queued,
                "rss_mb": s.rss_mb,
                "tools": s.tools,
                "crm_calls": s.crm_calls,
                "crm_calls_failed": s.crm_calls_failed,
                "crm_first_calls": s.crm_first_calls,
                "review_pending": s.review_pending,
                "review_oldest_age_s": s.review_oldest_age_s,
                "act_paused_by_review": s.act_paused_by_review,
                "act_pause_reason": s.act_pause_reason,
                "stages": {name: asdict(load) for name, load in s.stages.items()},
                "level": s.level,
                "levels": s.levels,
            }
            for s in run.samples
        ],
        # (seconds into the overload, per s) of each 10 s window the checks judge.
        "goodput_windows": goodput_windows(run, from_s=judged),
        "bottleneck_goodput_windows": goodput_windows(run, from_s=judged, at_bottleneck=True),
        "bottleneck_windows": bottleneck_windows(run, from_s=judged),
        "intake_per_second": [
            {"t": t, "outcome": outcome, "answers": n}
            for (t, outcome), n in sorted(run.submissions.per_second.items())
        ],
    }


def _shade_phases(ax: Axes, run: RunData) -> None:
    for i, (name, start, end) in enumerate(run.phases):
        if i % 2:
            ax.axvspan(start, end, color="0.93", zorder=0)
        ax.text(start, 1.0, name, transform=ax.get_xaxis_transform(), fontsize=7, va="bottom")


def _plot_ages(path: Path, runs: list[RunData]) -> None:
    """Oldest admitted, unfinished run per lane asked for, over time, both modes."""
    fig, axes = plt.subplots(len(LANES), 1, figsize=(9, 7), sharex=True)
    series = {run.mode: oldest_run_ages(run) for run in runs}
    for ax, lane in zip(axes, LANES, strict=True):
        for run in runs:
            points = series[run.mode]
            ax.plot(
                [t for t, _ in points],
                [ages[lane] for _, ages in points],
                label=run.mode, color=COLORS[run.mode],
            )  # fmt: skip
        ax.set_ylabel(f"{lane}\noldest age (s)")
        _shade_phases(ax, runs[0])
    axes[0].legend(loc="upper left")
    axes[-1].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_goodput(path: Path, runs: list[RunData], bucket_s: float = 5.0) -> None:
    """Runs that finished within their deadline per bucket_s, on two clocks: above, when
    act (the CRM writes, the capacity) handed each on, what the demo's checks judge;
    below, when each finished, people's reviews included."""
    fig, (at_act, finished) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for run in runs:
        for ax, at_bottleneck in ((at_act, True), (finished, False)):
            counts: dict[int, int] = {}
            for t in good_done_s(run, at_bottleneck=at_bottleneck):
                counts[int(t // bucket_s)] = counts.get(int(t // bucket_s), 0) + 1
            xs = sorted(counts)
            ax.step([x * bucket_s for x in xs], [counts[x] / bucket_s for x in xs],
                    where="post", label=run.mode, color=COLORS[run.mode])  # fmt: skip
    for ax in (at_act, finished):
        _shade_phases(ax, runs[0])
        ax.set_ylim(bottom=0)
    at_act.set_ylabel("at act\n(runs/s)")
    finished.set_ylabel("finished\n(runs/s)")
    finished.set_xlabel("seconds since start")
    at_act.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_memory(path: Path, runs: list[RunData]) -> None:
    fig, ax = plt.subplots(figsize=(9, 3))
    for run in runs:
        ax.plot([s.t for s in run.samples], [s.rss_mb for s in run.samples],
                label=run.mode, color=COLORS[run.mode])  # fmt: skip
    ax.set_ylabel("process RSS (MB)")
    ax.set_xlabel("seconds since start")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}


def _plot_crm_incident(path: Path, runs: list[RunData]) -> None:
    """Writes reaching the CRM per second (failed ones apart), both modes, and governed's
    crm_write breaker state, over the overload phase."""
    fig, (calls, breaker) = plt.subplots(
        2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for run in runs:
        points = list(zip(run.samples, run.samples[1:], strict=False))
        xs = [b.t for _, b in points]
        calls.plot(xs, [_per_s(a, b, b.crm_calls - a.crm_calls) for a, b in points],
                   label=f"{run.mode}: all writes", color=COLORS[run.mode])  # fmt: skip
        calls.plot(xs, [_per_s(a, b, b.crm_calls_failed - a.crm_calls_failed) for a, b in points],
                   label=f"{run.mode}: to the sick CRM", color=COLORS[run.mode],
                   linestyle="--")  # fmt: skip
        states = [(s.t, s.tools["crm_write"]) for s in run.samples if "crm_write" in s.tools]
        if states:
            breaker.step([t for t, _ in states], [_BREAKER_LEVEL[st] for _, st in states],
                         where="post", color=COLORS[run.mode], label=run.mode)  # fmt: skip
    for ax in (calls, breaker):
        _shade_phases(ax, runs[0])
        if runs[0].crm_incident is not None:
            ax.axvspan(*runs[0].crm_incident, color="tab:orange", alpha=0.2, zorder=0)
    calls.set_ylabel("CRM writes/s")
    calls.legend(loc="upper left", fontsize=7)
    breaker.set_yticks(list(_BREAKER_LEVEL.values()), list(_BREAKER_LEVEL))
    breaker.set_ylabel("crm_write\nbreaker")
    breaker.set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_retries(path: Path, runs: list[RunData], summaries: list[Summary]) -> None:
    """CRM writes per second that were retries (calls minus first attempts), both modes,
    with each run's amplification during the incident in its label."""
    by_mode = {s.mode: s for s in summaries}
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for run in runs:
        points = list(pairwise(run.samples))
        xs = [b.t for _, b in points]
        ratio = by_mode[run.mode].crm_retry_amplification_incident
        label = f"{run.mode} (amplification in the incident {ratio:.2f})" if ratio else run.mode
        retries = [
            _per_s(a, b, (b.crm_calls - b.crm_first_calls) - (a.crm_calls - a.crm_first_calls))
            for a, b in points
        ]
        ax.plot(xs, retries, label=label, color=COLORS[run.mode])
    _shade_phases(ax, runs[0])
    if runs[0].crm_incident is not None:
        ax.axvspan(*runs[0].crm_incident, color="tab:orange", alpha=0.2, zorder=0)
    ax.set_ylabel("CRM writes/s that are retries")
    ax.set_xlabel("seconds since start")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_review_queue(path: Path, runs: list[RunData]) -> None:
    """The approve stage's pending reviews (with governed's bound) and oldest pending age."""
    fig, (pending, age) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for run in runs:
        ts = [s.t for s in run.samples]
        pending.plot(ts, [s.review_pending for s in run.samples], label=run.mode,
                     color=COLORS[run.mode])  # fmt: skip
        age.plot(ts, [s.review_oldest_age_s for s in run.samples], label=run.mode,
                 color=COLORS[run.mode])  # fmt: skip
        if run.review_max_pending < 10_000:
            pending.axhline(run.review_max_pending, color=COLORS[run.mode], linestyle=":",
                            label=f"{run.mode}: max_pending")  # fmt: skip
    for ax in (pending, age):
        _shade_phases(ax, runs[0])
    pending.set_ylabel("pending reviews")
    pending.legend(loc="upper left", fontsize=7)
    age.set_ylabel("oldest pending (s)")
    age.set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: The stages feeding the bottleneck, whose pauses can starve it.
_FEEDERS = ("plan", "retrieve")
_BOTTLENECK = "act"


def _plot_bottleneck(path: Path, runs: list[RunData]) -> None:
    """Per mode: act's in-flight calls and queue; plan's and retrieve's paused partitions;
    the intake's answers per second."""
    fig, axes = plt.subplots(3, len(runs), figsize=(6 * len(runs), 7), sharex=True,
                             squeeze=False)  # fmt: skip
    for col, run in enumerate(runs):
        ts = [s.t for s in run.samples]
        busy, paused, intake = axes[0][col], axes[1][col], axes[2][col]
        act = [s.stages.get(_BOTTLENECK) for s in run.samples]
        busy.plot(ts, [a.in_flight if a else 0 for a in act], label="act in flight")
        busy.plot(ts, [a.lag if a else 0 for a in act], label="act queue (lag)")
        busy.set_title(run.mode, fontsize=9)
        busy.set_ylabel("records")
        busy.legend(loc="upper left", fontsize=7)
        for stage in _FEEDERS:
            loads = [s.stages.get(stage) for s in run.samples]
            paused.plot(ts, [sum(a.paused.values()) if a else 0 for a in loads],
                        label=f"{stage} paused partitions")  # fmt: skip
        paused.set_ylabel("partitions")
        paused.legend(loc="upper left", fontsize=7)
        outcomes = sorted({o for _t, o in run.submissions.per_second})
        for outcome in outcomes:
            points = sorted((t, n) for (t, o), n in run.submissions.per_second.items()
                            if o == outcome)  # fmt: skip
            intake.step([t for t, _ in points], [n for _, n in points], where="post",
                        label=outcome)  # fmt: skip
        intake.set_ylabel("intake answers/s")
        intake.set_xlabel("seconds since start")
        intake.legend(loc="upper left", fontsize=7)
        for ax in (busy, paused, intake):
            _shade_phases(ax, run)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_degradation(path: Path, runs: list[RunData]) -> None:
    """The degradation level the intake acted on (the workers with it) over time, and the
    entry stage's oldest queued age the ladder reads, for every run with controls."""
    governed = [run for run in runs if run.mode != "naive"]
    fig, (level, age) = plt.subplots(
        2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    for run in governed:
        ts = [s.t for s in run.samples]
        if len(run.ladder) > 1:
            index = {name: i for i, name in enumerate(run.ladder)}
            level.step(ts, [index.get(s.level, 0) for s in run.samples], where="post",
                       color=COLORS[run.mode], label=run.mode)  # fmt: skip
            level.set_yticks(range(len(run.ladder)), run.ladder)
        ages = [max(s.stage_ages.get(_ENTRY_STAGE, {}).values(), default=0.0) for s in run.samples]
        age.plot(ts, ages, color=COLORS[run.mode], label=run.mode)
    for ax in (level, age):
        if governed:
            _shade_phases(ax, governed[0])
            if governed[0].crm_incident is not None:
                ax.axvspan(*governed[0].crm_incident, color="tab:orange", alpha=0.2, zorder=0)
    level.set_ylabel("degradation\nlevel")
    level.legend(loc="upper left", fontsize=7)
    age.set_ylabel(f"{_ENTRY_STAGE}: oldest\nqueued age (s)")
    age.set_xlabel("seconds since start")
    age.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _per_s(a: Sample, b: Sample, n: int) -> float:
    span = b.t - a.t
    return n / span if span > 0 else 0.0
