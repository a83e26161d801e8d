"""PauseLog: partition pauses aggregated into one INFO summary per interval."""

from __future__ import annotations

import logging

import pytest

from streams.runtime.pause_log import PauseLog
from streams.types import TopicPartition

LOGGER = "streams.runtime.pause_log"
A = TopicPartition("wf.plan.standard", 0)
B = TopicPartition("wf.plan.standard", 1)


def _info(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 20]


def test_partitions_flapping_for_three_minutes_give_one_summary_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    pause_log = PauseLog("plan", "downstream")
    for step in range(1800):  # 0.1 s a step; A flaps every step, B every 10
        now = step / 10
        pause_log.tick(now)  # what came before this step
        pause_log.partition(A, "local_bound", step % 2 == 0, "fill", now)
        if step % 10 == 0:
            pause_log.partition(B, "local_bound", step % 20 == 0, "fill", now)
    pause_log.tick(180.0)
    lines = _info(caplog)
    assert len(lines) == 3, lines
    assert lines[0] == (
        "stage plan: partition pauses in the last 60 s: 330 for local_bound on 2 "
        "partition(s) (wf.plan.standard[0] x300, wf.plan.standard[1] x30), 0 paused now"
    )


def test_no_partition_pauses_no_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    pause_log = PauseLog("plan", "downstream")
    pause_log.partition(A, "lane", True, "x", 0.0)
    pause_log.tick(60.0)
    pause_log.tick(600.0)
    pause_log.tick(601.0, force=True)
    assert len(_info(caplog)) == 1


def test_a_stage_verdict_is_said_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    pause_log = PauseLog("enrich", "yield_to_foreground")
    for i in range(100):
        pause_log.stage_verdict(True, (f"plan.lag={500 + i}>=100",), {}, 0.0, float(i))
    assert pause_log.paused_for_s == 99.0
    for i in range(100, 200):
        pause_log.stage_verdict(False, (), {}, 0.0, float(i))
    assert pause_log.paused_for_s is None
    assert _info(caplog) == [
        "stage enrich paused (yield_to_foreground): plan.lag=500>=100; readings: none",
        "stage enrich resumed (yield_to_foreground) after 100.0 s paused; readings: none",
    ]
