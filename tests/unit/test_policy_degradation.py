"""The degradation ladder: entry at once, exit only after the dwell under the exit
threshold, knobs accumulated up the ladder, an operator's forced level winning until it
expires. Fake clock, no sleeps; hypothesis for no flapping."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clock import FakeClock
from streams.policy.degradation import (
    AgeCondition,
    FlagCondition,
    ForcedLevel,
    Ladder,
    LadderState,
    LevelSpec,
    Signals,
    effective_level,
)

DWELL = 5.0
LADDER = Ladder(
    levels=(
        LevelSpec("normal"),
        LevelSpec(
            "lean",
            when=(AgeCondition(stage="plan", enter_s=30.0, exit_s=10.0),),
            knobs={"model": "small", "retrieval_k": 3},
            pause_stages=frozenset({"enrich"}),
            intake_lanes={"background": "reject"},
        ),
        LevelSpec(
            "essential",
            when=(
                AgeCondition(stage=None, enter_s=60.0, exit_s=20.0),
                FlagCondition("tool_open", "crm_write"),
                FlagCondition("review_full", "approve"),
            ),
            knobs={"retrieval_k": 1},
            require_review=frozenset({"act"}),
            intake_lanes={"standard": "delay"},
        ),
    ),
    min_dwell_s=DWELL,
)


def _ages(**ages: float) -> Signals:
    return Signals(oldest_age_s=ages)


def test_enters_at_once_and_leaves_only_after_the_dwell_under_the_exit_threshold() -> None:
    clock = FakeClock()
    state = LadderState(LADDER)
    assert state.update(_ages(plan=5), clock.monotonic()) == 0
    assert state.update(_ages(plan=30), clock.monotonic()) == 1  # at once
    clock.advance(100)
    assert state.update(_ages(plan=15), clock.monotonic()) == 1  # in the band: held
    assert state.update(_ages(plan=9), clock.monotonic()) == 1  # under exit: dwell starts
    clock.advance(DWELL - 0.1)
    assert state.update(_ages(plan=9), clock.monotonic()) == 1
    clock.advance(0.1)
    assert state.update(_ages(plan=9), clock.monotonic()) == 0


def test_a_reading_back_in_the_band_restarts_the_dwell() -> None:
    clock = FakeClock()
    state = LadderState(LADDER)
    state.update(_ages(plan=40), clock.monotonic())
    state.update(_ages(plan=1), clock.monotonic())
    clock.advance(DWELL - 1)
    assert state.update(_ages(plan=12), clock.monotonic()) == 1  # back above exit
    clock.advance(2)
    assert state.update(_ages(plan=1), clock.monotonic()) == 1
    clock.advance(DWELL - 0.5)
    assert state.update(_ages(plan=1), clock.monotonic()) == 1
    clock.advance(0.5)
    assert state.update(_ages(plan=1), clock.monotonic()) == 0


def test_any_stage_age_tool_breaker_and_full_review_enter_a_level() -> None:
    now = 0.0
    assert LadderState(LADDER).update(_ages(act=61), now) == 2  # any stage
    assert LadderState(LADDER).update(Signals(tools_open=frozenset({"crm_write"})), now) == 2
    assert LadderState(LADDER).update(Signals(reviews_full=frozenset({"approve"})), now) == 2
    assert LadderState(LADDER).update(Signals(tools_open=frozenset({"other"})), now) == 0


def test_a_missing_reading_holds_the_level() -> None:
    state = LadderState(LADDER)
    state.update(_ages(plan=40), 0.0)
    assert state.update(Signals(), 100.0) == 1  # plan's age unknown: neither enter nor clear


def test_knobs_accumulate_up_the_ladder() -> None:
    lean = LADDER.view(1)
    essential = LADDER.view(2)
    assert lean.level == "lean" and lean.knobs == {"model": "small", "retrieval_k": 3}
    assert essential.knobs == {"model": "small", "retrieval_k": 1}
    assert essential.pause_stages == frozenset({"enrich"})
    assert essential.require_review == frozenset({"act"})
    assert essential.intake_lanes == {"background": "reject", "standard": "delay"}
    assert LADDER.view(0).degraded is False and essential.degraded is True


def test_a_forced_level_wins_until_it_expires() -> None:
    forced = ForcedLevel("essential", expires_at=1000.0)
    assert effective_level(LADDER, 0, forced, now=999.0) == 2
    assert effective_level(LADDER, 1, forced, now=1000.0) == 1  # expired: computed again
    assert effective_level(LADDER, 2, ForcedLevel("normal", None), now=5.0) == 0  # down too
    assert effective_level(LADDER, 1, ForcedLevel("gone", None), now=5.0) == 1  # unknown name


def test_a_state_seeded_at_a_level_holds_it_in_the_band() -> None:
    state = LadderState(LADDER, start=1)
    assert state.update(_ages(plan=15), 0.0) == 1
    assert LadderState(LADDER).update(_ages(plan=15), 0.0) == 0


def test_ladder_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="exit_s"):
        AgeCondition(stage="plan", enter_s=10.0, exit_s=10.0)
    with pytest.raises(ValueError, match="at least one condition"):
        Ladder(levels=(LevelSpec("normal"), LevelSpec("lean")), min_dwell_s=1.0)
    with pytest.raises(ValueError, match="twice"):
        Ladder(
            levels=(
                LevelSpec("normal"),
                LevelSpec("normal", when=(FlagCondition("tool_open", "t"),)),
            ),
            min_dwell_s=1.0,
        )


# --------------------------------------------------------------------------- no flapping

signal = st.builds(
    Signals,
    oldest_age_s=st.dictionaries(
        st.sampled_from(["plan", "act"]), st.floats(min_value=0, max_value=100), max_size=2
    ),
    tools_open=st.frozensets(st.sampled_from(["crm_write"])),
    reviews_full=st.frozensets(st.sampled_from(["approve"])),
)
steps = st.lists(
    st.tuples(signal, st.floats(min_value=0, max_value=DWELL / 2)),  # faster than the dwell
    max_size=300,
)


@given(steps)
def test_no_flapping_under_any_signal_sequence(sequence: list[tuple[Signals, float]]) -> None:
    clock = FakeClock()
    state = LadderState(LADDER)
    level = 0
    entered_at: dict[int, float] = {}  # level -> when the ladder last rose to it or above
    exits: dict[int, list[float]] = {1: [], 2: []}
    history: list[tuple[float, Signals]] = []
    for signals, step in sequence:
        clock.advance(step)
        now = clock.monotonic()
        history.append((now, signals))
        new = state.update(signals, now)
        for lvl in (1, 2):
            spec = LADDER.levels[lvl]
            if any(c.reading(signals) == "enter" for c in spec.when):
                assert new >= lvl  # entry is immediate
            if new >= lvl > level:
                entered_at[lvl] = now
            if level >= lvl > new:
                # Left: at least a dwell after entering, and every reading of the last
                # dwell was clear for this level.
                assert now - entered_at[lvl] >= DWELL
                recent = [s for t, s in history if t >= now - DWELL]
                assert all(c.reading(s) == "clear" for s in recent for c in spec.when)
                exits[lvl].append(now)
        level = new
    for times in exits.values():  # at most one exit per dwell
        for earlier, later in itertools.pairwise(times):
            assert later - earlier >= DWELL
