"""Group commit: the submissions that reach the ledger step in one event-loop iteration are
admitted together, as one batch (one reservation pass, one wake-up per acknowledgement
round, one decision pass). Owns the gathering; the batch's steps are
streams.intake.admit_batch's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from streams.intake.ledger_book import LedgerEntry
from streams.intake.requests import Decision, RunRequest
from streams.policy.admission import AdmissionDecision

#: A batch never holds more submissions than this; more start another batch at once.
MAX_BATCH = 1024


@dataclass(slots=True, eq=False)
class Submission:
    """One request on its way through a batch; `answer` is what its caller awaits."""

    request: RunRequest
    now_ms: int
    answer: asyncio.Future[Decision]
    run_id: str = ""  # set once its reservation is noted
    offset: int = -1  # of its reservation, once the broker placed it
    verdict: AdmissionDecision | None = None
    admitted: LedgerEntry | None = None
    due_ms: int | None = None
    finished: bool = False  # answered, or given up (its reservation released)
    sent: bool = False  # its event was handed to the producer: it may exist from now on


BatchRunner = Callable[[list[Submission]], Coroutine[Any, Any, None]]


class GroupCommit:
    """One per event loop; add() from that loop's thread only."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, run: BatchRunner, max_batch: int = MAX_BATCH
    ) -> None:
        self._loop = loop
        self._run = run
        self._max_batch = max_batch
        self._pending: list[Submission] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()  # strong references until done

    def add(self, request: RunRequest, now_ms: int) -> asyncio.Future[Decision]:
        submission = Submission(request, now_ms, self._loop.create_future())
        self._pending.append(submission)
        if len(self._pending) >= self._max_batch:
            self._start()
        elif not self._scheduled:
            # call_soon runs after every callback already due in this iteration: the
            # submissions woken together are gathered together.
            self._scheduled = True
            self._loop.call_soon(self._start)
        return submission.answer

    def _start(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = self._loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
