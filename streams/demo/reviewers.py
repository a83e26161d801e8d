"""The demo's reviewers: simulated people deciding the approve stage's reviews through
streams' ReviewDesk (the Python API behind `GET/POST /v1/workflows/W/reviews`).

Owns who decides which review and when: the desk's rule approves routine changes at once;
each person takes one pending review at a time (urgent first, then the oldest) and decides
it after the time topology/sim.py says a person takes. Must not decide the review queue's
rules (the review stage and streams.policy.review do) nor model people's speed (sim does).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from streams.review import ReviewDesk, ReviewNotPending
from streams.types import LANES

_LANE_RANK: dict[str, int] = {lane: i for i, lane in enumerate(LANES)}
#: The rule's name in W.reviews, beside the people's ("ana-1", ...).
RULE = "routine-rule"


class Reviewers:
    """Reviewers(desk, pool, stage=...).start() ... close(). `pool` is topology.sim's
    ReviewerPool (how many people, how long each takes). `decisions` counts by who:
    "person", "rule", and "too_late" (a person's decision after the review timed out)."""

    def __init__(
        self,
        desk: ReviewDesk,
        pool: Any,
        *,
        stage: str = "approve",
        decline_ratio: float = 0.1,
        poll_s: float = 0.05,
        seed: int = 11,
    ) -> None:
        self._desk = desk
        self._pool = pool
        self._stage = stage
        self._decline_ratio = decline_ratio
        self._poll_s = poll_s
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-reviewers", daemon=True)
        # Acknowledged writes take a few ms each: a few at once keep the rule's 40/s going.
        self._writers = ThreadPoolExecutor(4, thread_name_prefix="demo-review-write")
        self._lock = threading.Lock()
        self.decisions: Counter[str] = Counter()
        self._submitted: set[str] = set()  # decided or being decided, until the book agrees

    def start(self) -> Reviewers:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._writers.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        free = [f"reviewer-{i + 1}" for i in range(self._pool.people)]
        busy: dict[str, tuple[float, str]] = {}  # run -> (decided at, who)
        while not self._stop.wait(self._poll_s):
            now = time.monotonic()
            for run_id, (due, person) in list(busy.items()):
                if due <= now:
                    del busy[run_id]
                    free.append(person)
                    self._decide(run_id, person, "person")
            pending = self._desk.pending(self._stage)
            with self._lock:
                self._submitted &= {e.run_id for e in pending}
                taken = set(self._submitted)
            for entry in sorted(pending, key=lambda e: _LANE_RANK.get(e.lane, len(LANES))):
                if entry.run_id in taken or entry.run_id in busy:
                    continue
                if not self._pool.needs_person(entry.payload):
                    self._decide(entry.run_id, RULE, "rule")
                elif free:
                    busy[entry.run_id] = (now + self._pool.decision_s(), free.pop())

    def _decide(self, run_id: str, reviewer: str, who: str) -> None:
        declined = who == "person" and self._rng.random() < self._decline_ratio
        with self._lock:
            self._submitted.add(run_id)
        future = self._writers.submit(
            self._desk.decide,
            run_id,
            "decline" if declined else "approve",
            note="declined: needs a second look" if declined else None,
            reviewer=reviewer,
        )
        future.add_done_callback(lambda f: self._count(f, who))

    def _count(self, future: Future[Any], who: str) -> None:
        error = None if future.cancelled() else future.exception()
        with self._lock:
            if future.cancelled():
                return
            if isinstance(error, ReviewNotPending):
                self.decisions["too_late"] += 1
            elif error is None:
                self.decisions[who] += 1
            else:
                self.decisions["failed"] += 1
