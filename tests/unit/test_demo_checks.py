"""The demo's own checks on goodput, counted when the bottleneck handed each run on:
governed keeps it busy with work that counts in every 10 s window of the overload (95 % of
the warm-up capacity at least), and is never below naive over it."""

from __future__ import annotations

from dataclasses import replace

from streams.demo.main import checks
from streams.demo.summary import Summary


def _summary(mode: str, **changes: object) -> Summary:
    base = Summary(
        mode=mode,
        capacity_per_s=40.0,
        goodput_overload_per_s=39.5,
        goodput_overload_min_window_per_s=39.0,
        overload_judged_from_s=0.0,
        bottleneck_goodput_min_window_per_s=39.0,
        bottleneck_goodput_overload_per_s=39.5,
        goodput_by_phase={"overload": 39.5},
        bottleneck_goodput_by_phase={"overload": 39.5},
        bottleneck_overload_min_window_per_s=40.0,
        bottleneck_starved_overload_s=0.0,
        urgent_age_p99_overload_s=0.1,
        urgent_oldest_run_p99_overload_s=1.0,
        urgent_max_queue_age_s=60.0,
        urgent_latency_p50_s=3.0,
        urgent_latency_p99_s=10.0,
        admitted=100,
        completed=100,
        dead_lettered=0,
        accepted_never_finished=0,
        wasted_executions=0,
        decisions={"accepted": 100},
        dead_letters={},
        max_rss_mb=200.0,
        overload_age_growth_s=10.0 if mode == "naive" else 2.0,
        crm_incident_s=0.0,
        crm_calls_during_incident=0,
        crm_breaker_transitions={},
        crm_breaker_timeline=[],
        runs_lost_to_crm=0,
        crm_retry_amplification_incident=None,
        crm_retry_amplification_run=None,
        retries_total=0,
        review_max_pending=96,
        review_pending_peak=10,
        review_oldest_age_peak_s=5.0,
        act_paused_by_review_s=0.0,
        review_decisions={},
        escalations={},
        escalations_by_stage={},
        level_seconds={"normal": 10.0, "lean": 5.0},
        level_timeline=[],
        levels_apart_s=0.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_governed_at_capacity_in_every_window_and_above_naive_passes() -> None:
    naive = _summary("naive", bottleneck_goodput_overload_per_s=39.4)
    assert checks(_summary("governed"), naive, 16) == []


def test_one_window_under_95_percent_of_capacity_fails_though_the_mean_holds() -> None:
    governed = _summary("governed", bottleneck_goodput_min_window_per_s=37.9)  # 94.75 %
    naive = _summary("naive", bottleneck_goodput_overload_per_s=39.0)
    [failure] = checks(governed, naive, 16)
    assert "at the bottleneck fell to 37.9/s in a 10 s window" in failure
    at_95 = replace(governed, bottleneck_goodput_min_window_per_s=38.0)
    assert checks(at_95, naive, 16) == []


def test_governed_goodput_under_naive_by_more_than_the_finishing_noise_fails() -> None:
    governed = _summary("governed")  # 39.5/s, capacity 40/s: the margin is 0.4/s
    assert checks(governed, _summary("naive", bottleneck_goodput_overload_per_s=39.9), 16) == []
    # The finish-based goodput does not decide it: people's reviews shift when runs end.
    assert checks(governed, _summary("naive", goodput_overload_per_s=45.0), 16) == []
    [failure] = checks(governed, _summary("naive", bottleneck_goodput_overload_per_s=40.0), 16)
    assert "39.50/s in overload is under naive's 40.00/s by more than 1.0% of capacity" in failure
