"""The demo's live terminal view (rich): per stage and lane, queue age, lag, in-flight and
paused partitions with the reason; admission decisions and dead letters so far; the tools'
breakers (governed). Fits 80 columns. Owns presentation only.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.intake.service import Intake
from streams.runtime.worker import StageWorker

from .run import RunData

LANES = ("urgent", "standard", "background")


class LiveView:
    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, data: RunData, intake: Intake, workers: list[StageWorker]) -> None:
        self._live.update(render(data, intake, workers))


def render(data: RunData, intake: Intake, workers: list[StageWorker]) -> Group:
    phase = data.samples[-1].phase if data.samples else "starting"
    t = data.samples[-1].t if data.samples else 0.0
    title = Text(f"{data.mode} run · {phase} · {t:5.0f} s", style="bold")
    table = Table(box=None, pad_edge=False, width=78)
    for column in ("stage", "lane", "age s", "lag", "in-flight", "paused (why)"):
        right = column in ("age s", "lag", "in-flight")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for worker in workers:
        status = worker.status()
        paused = ", ".join(f"{n} {why}" for why, n in sorted(status.paused_by_reason.items()))
        first = True
        for lane in LANES:
            if lane not in status.lag_by_lane and lane not in status.age_by_lane:
                continue
            table.add_row(
                status.stage if first else "",
                lane,
                f"{status.age_by_lane.get(lane, 0.0):.1f}",
                str(status.lag_by_lane.get(lane, 0)),
                f"{status.in_flight}/{status.concurrency}" if first else "",
                (paused or "-")[:28] if first else "",
            )
            first = False
    outcomes: Counter[str] = Counter()
    for (_lane, outcome), n in data.submissions.decisions.items():
        outcomes[outcome] += n
    capacity = intake.capacity()
    decisions = " ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none yet"
    lines: list[Table | Text] = [
        title,
        table,
        Text(f"intake: {capacity.state} ({capacity.why})"[:80]),
        Text(f"decisions: {decisions}"[:80]),
    ]
    if data.samples and data.samples[-1].tools:  # governed: the tools' breakers
        breakers = " ".join(f"{n} {st}" for n, st in sorted(data.samples[-1].tools.items()))
        lines.append(Text(f"breakers: {breakers}"[:80]))
    return Group(*lines)
