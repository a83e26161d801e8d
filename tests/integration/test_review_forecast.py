"""The intake's deadline forecast uses the review queue's measured clear rate, against the
real broker: people clearing about 0.2 reviews/s with 8 pending make the intake refuse a
run whose deadline is 10 s away (deadline_unmeetable at the door) and admit one with
minutes to spare, while the first stage itself is idle."""

from __future__ import annotations

import time

import pytest

from streams.intake.requests import RunRequest
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.review import ReviewDesk, review_worker
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish

from .intake_helpers import running_intake
from .monitor_helpers import wait_for
from .process_helpers import start, workers
from .test_review import FAST, review_flow
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

__all__ = ["workers"]  # the fixture, used by name


def test_a_slow_review_queue_refuses_a_short_deadline_and_admits_a_long_one(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread]
) -> None:
    topology = review_flow(admin, intake={}, max_pending=20, max_wait_s=300, on_timeout="decline")
    desk = ReviewDesk(topology, client_config)
    try:
        start(workers, StageWorker(topology, "draft", client_config, options=FAST))
        start(workers, review_worker(topology, "approve", client_config, options=FAST))
        publish(
            client_config,
            topology.stages["draft"].input_topics_by_lane["standard"],
            events(topology, "draft", 10),
        )
        wait_for(lambda: len(desk.pending()) == 10, 20, "10 pending reviews")
        first_parked_ms = desk.pending()[0].admitted_at_ms
        # People had work for 10 s and decided 2: about 0.2 reviews/s, 8 left pending.
        time.sleep(max(0.0, first_parked_ms / 1000 + 10 - time.time()))
        for review in desk.pending()[:2]:
            desk.decide(review.run_id, "approve", note=None, reviewer="ana")
        wait_for(lambda: len(desk.pending()) == 8, 10, "8 pending")
        with running_intake(topology, client_config) as intake:
            wait_for(
                lambda: intake.capacity().first_stage.review_wait_s > 30, 10, "the review wait"
            )
            now_ms = int(time.time() * 1000)
            hopeless = intake.submit(RunRequest("t", b"{}", deadline_ms=now_ms + 10_000))
            roomy = intake.submit(RunRequest("t", b"{}", deadline_ms=now_ms + 400_000))
        assert (hopeless.outcome, hopeless.reason) == ("rejected", "deadline_unmeetable")
        # 8 pending + this run at ~0.2/s: about 45 s (at most max_wait_s).
        assert hopeless.forecast_wait_s is not None and 30 < hopeless.forecast_wait_s <= 300
        assert (roomy.outcome, roomy.reason) == ("accepted", "admitted")
    finally:
        desk.close()
