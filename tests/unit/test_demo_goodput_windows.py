"""goodput_windows: runs finished within their deadline per s, in every 10 s window of a
phase, so a dip the phase's mean hides shows."""

from __future__ import annotations

import pytest

from streams.demo.run import Completion, RunData
from streams.demo.summary import goodput_by_phase, goodput_windows

START = 1_000.0  # the run's wall-clock start


def _run(done_at_s: list[float], *, late: set[float] | None = None) -> RunData:
    data = RunData("governed", "wf", START)
    data.phases = [("warm-up", 0.0, 10.0), ("overload", 10.0, 30.0)]
    for i, t in enumerate(done_at_s):
        done_ms = int((START + t) * 1000)
        deadline = done_ms - 1 if late and t in late else done_ms + 1
        data.completions.append(Completion(f"r{i}", "standard", done_ms - 500, done_ms, deadline))
    return data


def test_a_steady_phase_gives_the_same_rate_in_every_window() -> None:
    data = _run([10.0 + i * 0.1 for i in range(200)])  # 10/s for the 20 s of overload
    windows = goodput_windows(data)
    assert len(windows) == 11  # starts 0, 1, ... 10 s into the phase
    assert all(rate == pytest.approx(10.0) for _at, rate in windows)


def test_a_dip_shows_in_the_windows_that_hold_it() -> None:
    steady = [10.0 + i * 0.1 for i in range(200)]
    data = _run([t for t in steady if not 20.0 <= t < 25.0])  # nothing for 5 s
    lowest = min(rate for _at, rate in goodput_windows(data))
    assert lowest == pytest.approx(5.0)  # a window holding the whole gap: half of it


def test_late_runs_and_runs_outside_the_phase_do_not_count() -> None:
    inside = [10.0 + i * 0.1 for i in range(200)]
    data = _run([5.0, 31.0, *inside], late={10.0, 10.1})
    windows = goodput_windows(data)
    assert windows[0][1] == pytest.approx(9.8)  # two of the first window's 100 were late


def test_a_phase_shorter_than_a_window_is_one_window() -> None:
    data = _run([10.0 + i * 0.1 for i in range(200)])
    data.phases = [("overload", 10.0, 14.0)]
    [(at, rate)] = goodput_windows(data)
    assert at == 0.0
    assert rate == pytest.approx(10.0)
    assert goodput_windows(data, phase="recovery") == []


def test_windows_judged_from_a_point_in_the_phase_start_there() -> None:
    steady = [10.0 + i * 0.1 for i in range(200)]
    data = _run([t for t in steady if t >= 15.0])  # nothing in the first 5 s
    windows = goodput_windows(data, from_s=5.0)
    assert windows[0][0] == 5.0  # still seconds into the phase
    assert len(windows) == 6
    assert all(rate == pytest.approx(10.0) for _at, rate in windows)
    assert min(rate for _at, rate in goodput_windows(data)) == pytest.approx(5.0)


def test_goodput_by_phase_counts_each_phase_over_its_own_length() -> None:
    warm = [i * 0.5 for i in range(20)]  # 2/s for the 10 s of warm-up
    overload = [10.0 + i * 0.1 for i in range(200)]  # 10/s for its 20 s
    data = _run([*warm, *overload], late={10.0})
    assert goodput_by_phase(data) == {
        "warm-up": pytest.approx(2.0),
        "overload": pytest.approx(199 / 20),
    }


def test_at_the_bottleneck_each_run_counts_when_act_handed_it_on() -> None:
    # act hands on 10/s through the 20 s of overload; each run finishes 2 s later.
    finished = [12.0 + i * 0.1 for i in range(200)]
    data = _run(finished, late={finished[-1]})
    for completion in data.completions:
        data.bottleneck_done_ms[completion.run_id] = completion.done_ms - 2000
    assert goodput_windows(data)[0][1] == pytest.approx(8.0)  # the first 2 s finish none
    at_act = goodput_windows(data, at_bottleneck=True)
    assert at_act[0][1] == pytest.approx(10.0)
    # Every run act handed on in the overload counts, but the one that ended late.
    assert goodput_by_phase(data, at_bottleneck=True)["overload"] == pytest.approx(199 / 20)
