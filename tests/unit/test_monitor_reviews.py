"""The monitor's review queues from W.reviews entries, with made-up entries and a fixed
`now`: latest entry per run, a late pending write does not reopen a decided run, a
tombstone forgets it, timeouts do not count as cleared, room grows with live workers,
another workflow's entries are left out."""

from __future__ import annotations

from streams.monitor.reviews import ReviewLedger
from streams.review.records import ReviewEntry, ReviewState
from streams.topology import Topology, parse_topology

NOW = 1_800_000_000.0


def flow() -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "stages": {
                "draft": {"handler": "tests.integration.handlers:noop", "downstream": ["ok"]},
                "ok": {"kind": "review", "review": {"max_pending": 2, "max_wait_s": 60}},
            },
        },
        "<test>",
    )


def entry(
    run_id: str,
    state: ReviewState,
    admitted_ago_s: float,
    *,
    decided_ago_s: float | None = None,
    reviewer: str | None = None,
    workflow: str = "wf",
) -> ReviewEntry:
    admitted = int((NOW - admitted_ago_s) * 1000)
    return ReviewEntry(
        workflow=workflow, stage="ok", run_id=run_id, state=state, tenant="t", lane="standard",
        admitted_at_ms=admitted, deadline_ms=admitted + 60_000, payload=b"",
        decided_at_ms=None if decided_ago_s is None else int((NOW - decided_ago_s) * 1000),
        decision=None if state == "pending" else "approve", reviewer=reviewer,
    )  # fmt: skip


def test_pending_oldest_and_people_clear_rate() -> None:
    ledger = ReviewLedger("wf")
    for e in (
        entry("a", "pending", 30),
        entry("b", "pending", 90),
        entry("c", "approved", 100, decided_ago_s=10, reviewer="ana"),
        entry("d", "timed_out", 200, decided_ago_s=100, reviewer="timeout"),
        entry("e", "approved", 900, decided_ago_s=700, reviewer="bo"),  # out of the window
        entry("x", "pending", 500, workflow="other"),
    ):
        ledger.add(e)
    (view,) = ledger.views(flow().stages.values(), now=NOW, workers_alive={})
    assert (view.stage, view.pending, view.max_pending, view.full) == ("ok", 2, 2, True)
    assert view.oldest_pending_age_s == 90.0 and view.over_max_wait
    assert view.clear_rate_per_s == 1 / 600


def test_latest_entry_wins_but_a_late_pending_write_does_not_reopen() -> None:
    ledger = ReviewLedger("wf")
    ledger.add(entry("a", "pending", 30))
    ledger.add(entry("a", "approved", 30, decided_ago_s=5, reviewer="ana"))
    ledger.add(entry("a", "pending", 30))  # a worker's late write of the same review
    ledger.add(entry("b", "pending", 20))
    ledger.forget("b")  # a tombstone
    (view,) = ledger.views(flow().stages.values(), now=NOW, workers_alive={"ok": 3})
    assert view.pending == 0 and view.oldest_pending_age_s == 0.0
    assert not view.full and not view.over_max_wait and view.workers_alive == 3
    # A newer review of the same run (a replay parked anew) is pending again.
    ledger.add(entry("a", "pending", 1))
    (view,) = ledger.views(flow().stages.values(), now=NOW, workers_alive={"ok": 3})
    assert view.pending == 1 and not view.full  # room: 2 per worker x 3
