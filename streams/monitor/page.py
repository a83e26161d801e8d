"""The status page: one self-refreshing HTML document rendered from a snapshot on the
server (no script, no build step), for people who want a browser tab instead of a
terminal.

Owns the HTML; must not read Kafka. Every value is escaped.
"""

from __future__ import annotations

import html
import time

from streams.monitor import fmt
from streams.monitor.control_text import control_lines
from streams.monitor.model import BREAKER_SEVERITY, MonitorSnapshot, PausedAt, ReviewView, ToolView

_CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.lane td:first-child{padding-left:2em;color:#555}
.OK{color:#1a7f37}.WARN{color:#9a6700}.REWIND{color:#8250df}
.STALL,.STOP,.ERR{color:#cf222e;font-weight:bold}.UNKNOWN{color:#888}
.why{color:#555;font-size:90%}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _paused_list(paused: tuple[PausedAt, ...]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}] {'+'.join(p.reasons)}" for p in paused) or "-"


#: A breaker's worst state, styled like the statuses it causes (open: the stage stops).
_BREAKER_CLASS = {"open": "STOP", "half_open": "WARN", "closed": "OK"}


def _breakers(tool: ToolView) -> str:
    if not tool.breakers:
        return "no breaker"
    return ", ".join(
        f"{state} {tool.breakers[state]}" for state in BREAKER_SEVERITY if state in tool.breakers
    )


def _review_row(r: ReviewView) -> str:
    room = r.max_pending * max(1, r.workers_alive)
    state, css = (
        ("over max wait", "STOP")
        if r.over_max_wait
        else ("full", "WARN")
        if r.full
        else ("ok", "OK")
    )
    return (
        f'<tr data-review="{_e(r.stage)}"><td>{_e(r.stage)}</td>'
        f'<td class="n">{r.pending} / {room}{" (full)" if r.full else ""}</td>'
        f'<td class="n">{_e(fmt.age(r.oldest_pending_age_s))}</td>'
        f'<td class="n">{_e(fmt.age(r.max_wait_s))}</td>'
        f'<td class="n">{_e(fmt.rate(r.clear_rate_per_s))}</td>'
        f'<td class="n">{r.workers_alive}</td><td class="{css}">{state}</td></tr>'
    )


def render_page(snapshot: MonitorSnapshot, *, refresh_s: float = 2.0) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.measured_at))
    rows: list[str] = []
    for s in snapshot.stages:
        paused = fmt.counts(s.paused)
        run = f"{s.in_flight}/{s.concurrency}" if s.workers_alive else "no worker"
        rows.append(
            f'<tr class="stage" data-stage="{_e(s.stage)}"><td><b>{_e(s.stage)}</b></td>'
            f'<td class="{_e(s.status)}">{_e(s.status)}</td><td class="n">{s.lag}</td>'
            f'<td class="n">{_e(fmt.age(s.time_lag_s))}</td>'
            f'<td class="n oldest">{_e(fmt.age(s.oldest_age_s))}</td>'
            f'<td class="n">{_e(fmt.age(s.max_queue_age_s))}</td><td class="n">{_e(run)}</td>'
            f'<td class="paused">{_e(paused)}</td>'
            f"<td>{_e(fmt.counts(s.dead_letters_per_min))}</td>"
            f'<td class="retries" title="{_e(fmt.tiers(s.retries_per_min_by_tier))}">'
            f"{_e(fmt.counts(s.retries_per_min))}</td>"
            f'<td class="escalations">{_e(fmt.counts(s.escalations_per_min))}</td>'
            f'<td class="why">{_e(s.why)}</td></tr>'
        )
        for lane in s.lanes:
            lane_paused = f"{lane.paused_partitions} partitions" if lane.paused_partitions else ""
            rows.append(
                f'<tr class="lane"><td>{_e(lane.lane)}</td>'
                f'<td class="{_e(lane.status)}">{_e(lane.status)}</td>'
                f'<td class="n">{lane.lag}</td><td class="n">{_e(fmt.age(lane.time_lag_s))}</td>'
                f'<td class="n">{_e(fmt.age(lane.oldest_age_s))}</td><td></td><td></td>'
                f"<td>{_e(lane_paused)}</td><td></td><td></td><td></td><td></td></tr>"
            )
    workers = "".join(
        f"<tr><td>{_e(w.stage)}</td><td>{_e(w.worker)}</td>"
        f"<td>{'alive' if w.alive else 'gone'}</td>"
        f'<td class="n">{_e(fmt.age(w.reported_ago_s))}</td>'
        f'<td class="n">{w.in_flight}/{_e("?" if w.concurrency is None else w.concurrency)}</td>'
        f"<td>{_e(_paused_list(w.paused))}</td></tr>"
        for w in snapshot.workers
    )
    tools = "".join(
        f'<tr data-tool="{_e(t.name)}"><td>{_e(t.name)}</td><td>{_e(", ".join(t.stages))}</td>'
        f'<td class="{_BREAKER_CLASS.get(t.worst_breaker or "", "")}">{_e(_breakers(t))}</td>'
        f'<td class="n">{t.in_flight}</td><td class="n">{t.waiting}</td>'
        f'<td class="n">{_e("-" if t.concurrency_limit is None else t.concurrency_limit)}</td>'
        f'<td class="n">{t.workers}</td></tr>'
        for t in snapshot.tools
    )
    reviews = "".join(_review_row(r) for r in snapshot.reviews)
    retries = fmt.counts(snapshot.retries_per_min)
    tiers = fmt.tiers(snapshot.retries_per_min_by_tier)
    intake = snapshot.intake
    reason = f" ({intake.admission_reason})" if intake.admission_reason else ""
    error = f'<p class="ERR">reading: {_e(snapshot.error)}</p>' if snapshot.error else ""
    control = "".join(f"<p>{_e(line)}</p>" for line in control_lines(snapshot.control))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_s:g}">
<title>streams monitor: {_e(snapshot.workflow)}</title><style>{_CSS}</style></head>
<body><h1>{_e(snapshot.workflow)}</h1><p>measured {_e(at)}; refreshes every {refresh_s:g} s</p>
{error}
<h2>Degradation</h2><div id="degradation">{control or "<p>W.control not read yet</p>"}</div>
<table id="stages"><thead><tr><th>stage / lane</th><th>status</th><th>lag</th><th>time lag</th>
<th>oldest queued</th><th>max age</th><th>in flight / limit</th><th>paused (reason: partitions)</th>
<th>dead letters / min</th><th>retries / min</th><th>escalations / min</th><th>why</th>
</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<h2>Intake</h2><p id="intake">admission: <b>{_e(intake.admission)}</b>{_e(reason)};
decisions / min: {_e(fmt.counts(intake.decisions_per_min))}</p>
<h2>Retries and escalations</h2>
<p id="retries">retries / min: {_e(retries)}{_e(f" ({tiers})" if tiers else "")};
escalations / min: {_e(fmt.counts(snapshot.escalations_per_min))}</p>
<h2>Review queues</h2><table id="reviews"><thead><tr><th>stage</th><th>pending / room</th>
<th>oldest pending</th><th>max wait</th><th>cleared by people</th><th>workers</th>
<th>state</th></tr></thead><tbody>
{reviews or '<tr><td colspan="7">no review stage</td></tr>'}
</tbody></table>
<h2>Tools</h2><table id="tools"><thead><tr><th>tool</th><th>stages</th>
<th>breaker (state: workers)</th><th>running</th><th>waiting</th><th>slots</th>
<th>workers</th></tr></thead><tbody>
{tools or '<tr><td colspan="7">no tool has reported</td></tr>'}
</tbody></table>
<h2>Workers</h2><table id="workers"><thead><tr><th>stage</th><th>worker</th><th>state</th>
<th>last report</th><th>in flight / limit</th><th>paused partitions</th></tr></thead><tbody>
{workers or '<tr><td colspan="6">no worker has reported</td></tr>'}
</tbody></table>
<p><a href="/api/status">JSON</a> · <a href="/metrics">Prometheus metrics</a></p>
</body></html>
"""
