"""Tombstones for reviews whose run has moved on, so compacted W.reviews keeps pending
reviews (and recent tombstones), not every review ever decided.

Owns when a decided or timed-out entry may go: once the review stage's consumer group has
committed past the entry's record, and its decision is older than the stage's
rate_window_s. Committed past, its outcome (the run sent on, escalated, dead-lettered) is
acknowledged and the record is never redelivered, so no worker needs the entry again;
before that a restarted worker must find the decision, or a person would be asked again.
Within the window, every reader of W.reviews (a restarted worker or intake, the desk, the
monitor) still counts the decision in the clear rate. Must not decide reviews nor read
W.reviews (the book does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from streams.errors import StreamsError
from streams.review.book import ReviewBook
from streams.review.records import ReviewEntry
from streams.types import TopicPartition

log = logging.getLogger(__name__)

#: The review stage's committed offsets of these partitions (None: nothing committed).
CommittedOffsets = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int | None]]


def settled(
    entries: Iterable[ReviewEntry],
    committed: Mapping[TopicPartition, int | None],
    *,
    now_ms: int,
    keep_decided_ms: int,
) -> list[ReviewEntry]:
    """The decided entries whose record the group has committed past, decided at least
    `keep_decided_ms` before `now_ms` (these may be tombstoned). Pending entries, and
    entries with no record kept (offset -1), never are."""
    found = []
    for entry in entries:
        if entry.state == "pending" or entry.record_offset < 0:
            continue
        if not _decided_before(entry, now_ms - keep_decided_ms):
            continue
        done = committed.get(TopicPartition(entry.record_topic, entry.record_partition))
        if done is not None and done > entry.record_offset:
            found.append(entry)
    return found


def _decided_before(entry: ReviewEntry, cutoff_ms: int) -> bool:
    return (entry.decided_at_ms or 0) <= cutoff_ms


class ReviewSweeper:
    """Every `interval_s`, on a thread of its own, tombstones the settled entries of review
    stage `stage`, whose consumer group's offsets `committed` reads; decisions are kept
    `keep_decided_s` (the stage's rate_window_s)."""

    def __init__(
        self,
        book: ReviewBook,
        stage: str,
        committed: CommittedOffsets,
        *,
        keep_decided_s: float,
        interval_s: float = 2.0,
    ) -> None:
        self._book = book
        self._stage = stage
        self._committed = committed
        self._keep_ms = int(keep_decided_s * 1000)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="review-sweeper", daemon=True)

    def start(self) -> ReviewSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15.0)

    def sweep(self) -> int:
        """Tombstone what is settled now; how many. Raises StreamsError."""
        now_ms = int(time.time() * 1000)  # decisions carry wall-clock times
        # Offsets are read only when some decision is old enough to go.
        cutoff_ms = now_ms - self._keep_ms
        decided = [e for e in self._book.decided(self._stage) if _decided_before(e, cutoff_ms)]
        if not decided:
            return 0
        parts = sorted({TopicPartition(e.record_topic, e.record_partition) for e in decided})
        done = settled(
            decided, self._committed(parts), now_ms=now_ms, keep_decided_ms=self._keep_ms
        )
        for entry in done:
            self._book.forget(entry)
        return len(done)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sweep()
            except StreamsError as exc:  # the broker away: the entries wait for next time
                log.warning("decided reviews not tombstoned yet: %s", exc)
