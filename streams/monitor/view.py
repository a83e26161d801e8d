"""The terminal forms of a snapshot: a rich table (one row per stage, one per lane below
it) with the workers and the intake under it, and a one-line heartbeat for logs and
pipes.

Owns the layout; must not read Kafka. Readable at 80 columns: rich shrinks and wraps the
columns to the console width, and wider terminals get the table at its natural width.
"""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from streams.monitor import fmt
from streams.monitor.control_text import control_lines, level_text
from streams.monitor.model import (
    BREAKER_SEVERITY,
    MonitorSnapshot,
    ReviewView,
    StageStatus,
    ToolView,
)

_STYLE: dict[str, str] = {
    "OK": "green",
    "WARN": "yellow",
    "REWIND": "magenta",
    "STALL": "red",
    "STOP": "bold red",
    "ERR": "bold red",
    "UNKNOWN": "dim",
}


def _status(status: StageStatus) -> Text:
    return Text(status, style=_STYLE.get(status, ""))


def render_table(snapshot: MonitorSnapshot) -> RenderableType:
    title = (
        f"{snapshot.workflow} at {time.strftime('%H:%M:%S', time.localtime(snapshot.measured_at))}"
    )
    table = Table(title=title, expand=False, pad_edge=False, show_edge=False)
    table.add_column("stage/lane", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("lag", justify="right")
    table.add_column("t-lag", justify="right")
    table.add_column("oldest", justify="right")
    table.add_column("run/cap", justify="right")
    table.add_column("paused")
    table.add_column("dlq/min")
    for stage in snapshot.stages:
        table.add_row(
            Text(stage.stage, style="bold"),
            _status(stage.status),
            str(stage.lag),
            fmt.age(stage.time_lag_s),
            fmt.age(stage.oldest_age_s),
            f"{stage.in_flight}/{stage.concurrency}" if stage.workers_alive else "no worker",
            fmt.counts(stage.paused),
            fmt.counts(stage.dead_letters_per_min),
        )
        for lane in stage.lanes:
            table.add_row(
                f"  {lane.lane}",
                _status(lane.status),
                str(lane.lag),
                fmt.age(lane.time_lag_s),
                fmt.age(lane.oldest_age_s),
                "",
                f"{lane.paused_partitions} part." if lane.paused_partitions else "",
                "",
            )
    lines: list[RenderableType] = [table]
    for stage in snapshot.stages:
        if stage.status != "OK":
            lines.append(Text(f"{stage.stage}: {stage.why}", style=_STYLE.get(stage.status, "")))
    alive = [w for w in snapshot.workers if w.alive]
    gone = len(snapshot.workers) - len(alive)
    workers = ", ".join(f"{w.stage}/{w.worker} {fmt.age(w.reported_ago_s)} ago" for w in alive)
    lines.append(Text(f"workers: {workers or 'none alive'}" + (f" ({gone} gone)" if gone else "")))
    if snapshot.tools:
        lines.append(Text("tools: " + "; ".join(_tool_text(t) for t in snapshot.tools)))
    control = snapshot.control
    degraded = control is not None and control["level"] != control["levels"][0]
    for i, line in enumerate(control_lines(control)):
        lines.append(Text(line, style="bold yellow" if i == 0 and degraded else "yellow"))
    retrying = [
        f"{s.stage} {fmt.counts(s.retries_per_min)} ({fmt.tiers(s.retries_per_min_by_tier)})"
        for s in snapshot.stages
        if s.retries_per_min
    ]
    if retrying:
        lines.append(Text("retries/min: " + "; ".join(retrying)))
    escalating = [
        f"{s.stage} {fmt.counts(s.escalations_per_min)}"
        for s in snapshot.stages
        if s.escalations_per_min
    ]
    if escalating:
        lines.append(Text("escalations/min: " + "; ".join(escalating), style="yellow"))
    for review in snapshot.reviews:
        style = "bold red" if review.over_max_wait else "yellow" if review.full else ""
        lines.append(Text(review_text(review), style=style))
    intake = snapshot.intake
    reason = f" ({intake.admission_reason})" if intake.admission_reason else ""
    lines.append(
        Text(
            f"intake: {intake.admission}{reason}; "
            f"decisions/min: {fmt.counts(intake.decisions_per_min)}"
        )
    )
    if snapshot.error:
        lines.append(Text(f"reading: {snapshot.error}", style="bold red"))
    return Group(*lines)


def _tool_text(tool: ToolView) -> str:
    """ "crm breaker open 1, closed 1; 3 running, 4 waiting / 10" (states worst first)."""
    breakers = ", ".join(
        f"{state} {tool.breakers[state]}" for state in BREAKER_SEVERITY if state in tool.breakers
    )
    limit = "" if tool.concurrency_limit is None else f" / {tool.concurrency_limit}"
    return (
        f"{tool.name} {'breaker ' + breakers if breakers else 'no breaker'}; "
        f"{tool.in_flight} running, {tool.waiting} waiting{limit}"
    )


def review_text(review: ReviewView) -> str:
    """ "review approve: 3/3 pending (full), oldest 50s > max wait 30s, clearing 0.005/s"."""
    full = " (full)" if review.full else ""
    room = review.max_pending * max(1, review.workers_alive)
    over = ">" if review.over_max_wait else "of"
    return (
        f"review {review.stage}: {review.pending}/{room} pending{full}, "
        f"oldest {fmt.age(review.oldest_pending_age_s)} {over} max wait "
        f"{fmt.age(review.max_wait_s)}, clearing {fmt.rate(review.clear_rate_per_s)}"
    )


def heartbeat_line(snapshot: MonitorSnapshot) -> str:
    """One line per round for logs: each stage's status, lag, oldest age and pauses."""
    parts = [time.strftime("%H:%M:%S", time.localtime(snapshot.measured_at)), snapshot.workflow]
    for stage in snapshot.stages:
        text = f"{stage.stage} {stage.status}"
        if stage.status != "UNKNOWN":
            text += f" lag {stage.lag} age {fmt.age(stage.oldest_age_s)}"
        if stage.paused:
            text += f" paused {fmt.counts(stage.paused)}"
        if stage.dead_letters_per_min:
            text += f" dlq/min {fmt.counts(stage.dead_letters_per_min)}"
        if stage.retries_per_min:
            text += f" retries/min {fmt.number(sum(stage.retries_per_min.values()))}"
        if stage.escalations_per_min:
            text += f" escalations/min {fmt.number(sum(stage.escalations_per_min.values()))}"
        parts.append(text)
    for review in snapshot.reviews:
        room = review.max_pending * max(1, review.workers_alive)
        parts.append(
            f"review {review.stage} {review.pending}/{room} "
            f"oldest {fmt.age(review.oldest_pending_age_s)}"
        )
    for tool in snapshot.tools:
        worst = tool.worst_breaker
        if worst is not None and worst != "closed":
            parts.append(f"tool {tool.name} {worst}")
    if snapshot.control is not None:
        parts.append(level_text(snapshot.control))
    parts.append(f"intake {snapshot.intake.admission}")
    if snapshot.error:
        parts.append(f"error: {snapshot.error}")
    return " | ".join(parts)
