"""The review book: every run's latest review entry, read from the workflow's compacted
W.reviews topic on a thread of its own, and written back to it.

Owns reading and writing W.reviews and telling waiters when a run's review is decided.
Must not decide outcomes (streams.review.stage does) nor serve HTTP (streams.review.http).
Shared by a review stage's worker (which parks runs and waits for decisions) and the
review desk (which lists them and records people's decisions).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from streams.errors import SerdeError, StreamsError
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import AckWait, RecordProducer
from streams.kafka.tail import TopicTail
from streams.policy.review import Decision, ReviewConfig, ReviewQueue
from streams.review.records import ReviewCodec, ReviewEntry
from streams.topology import Topology

log = logging.getLogger(__name__)

Listener = Callable[[ReviewEntry], None]


class ReviewBook:
    """start() reads W.reviews to its end (so a restarted worker finds its pending
    reviews) and keeps following it; close() stops. Thread-safe."""

    def __init__(self, topology: Topology, client: ClientConfig) -> None:
        self.topology = topology
        self.topic = topology.reviews_topic
        self._client = client
        self._codec = ReviewCodec()
        self._lock = threading.Lock()
        self._entries: dict[str, ReviewEntry] = {}
        # One policy queue per review stage: its oldest pending age and clear rate.
        self._queues = {
            name: ReviewQueue(_unbounded(stage.review))
            for name, stage in topology.stages.items()
            if stage.review is not None
        }
        self._listeners: list[Listener] = []
        self._stopping = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: RecordProducer | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 30.0) -> ReviewBook:
        self._producer = RecordProducer(self._client)
        tail = TopicTail(self._client, self.topic, 1, fetch_wait_ms=50)
        self._thread = threading.Thread(
            target=self._follow, args=(tail,), name="review-book", daemon=True
        )
        self._thread.start()
        if not self._caught_up.wait(timeout_s):
            self.close()
            raise StreamsError(f"could not read {self.topic} to its end in {timeout_s:g} s")
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._producer is not None:
            self._producer.flush(5.0)

    # ----------------------------------------------------------------- reading
    def listen(self, listener: Listener) -> None:
        """Call `listener(entry)` (on the book's thread) for every entry read from now on."""
        with self._lock:
            self._listeners.append(listener)

    def get(self, run_id: str) -> ReviewEntry | None:
        with self._lock:
            return self._entries.get(run_id)

    def pending(self, stage: str | None = None) -> list[ReviewEntry]:
        """Pending reviews, oldest first (the order they time out in)."""
        with self._lock:
            found = [
                e
                for e in self._entries.values()
                if e.state == "pending" and (stage is None or e.stage == stage)
            ]
        return sorted(found, key=lambda e: (e.admitted_at_ms, e.run_id))

    def oldest_age_s(self, stage: str, *, now: float) -> float:
        with self._lock:
            return self._queues[stage].oldest_age_s(now=now)

    def clear_rate_per_s(self, stage: str, *, now: float) -> float:
        with self._lock:
            return self._queues[stage].clear_rate_per_s(now=now)

    def expected_wait_s(self, stage: str, *, now: float) -> float | None:
        """How long a run reaching `stage` now should expect to wait for its decision (the
        stage's pending reviews at its measured clear rate); None: no rate measured yet."""
        with self._lock:
            return self._queues[stage].expected_wait_s(now=now)

    # ----------------------------------------------------------------- writing
    def write(self, entry: ReviewEntry, timeout_s: float = 10.0) -> None:
        """Write `entry` and wait for the broker's ack (a review the book cannot keep must
        not be shown or acted on). Raises StreamsError."""
        self._send_acked(entry.run_id, self._codec.encode(entry), "written to", timeout_s)
        self._apply(entry)  # our own write is visible at once, before it is read back

    def forget(self, entry: ReviewEntry, timeout_s: float = 10.0) -> None:
        """Tombstone `entry`'s run in W.reviews (compaction then drops its review) and wait
        for the ack. Only for a decided entry whose run has moved on (streams.review.sweeper
        says when). Raises StreamsError."""
        assert entry.state != "pending", "a pending review is never forgotten"
        self._send_acked(entry.run_id, None, "tombstoned in", timeout_s)
        self._drop(entry.run_id)

    def _send_acked(self, run_id: str, value: bytes | None, what: str, timeout_s: float) -> None:
        assert self._producer is not None, "start() the book first"
        ack = AckWait()
        with self._lock:  # one producer, several writer threads
            self._producer.send(self.topic, value, key=run_id.encode(), on_ack=ack.on_ack)
        self._producer.flush(timeout_s)
        if (cause := ack.problem()) is not None:
            raise StreamsError(f"review of run {run_id} not {what} {self.topic}: {cause}")

    def decided(self, stage: str) -> list[ReviewEntry]:
        """The stage's decided and timed-out entries the book still holds."""
        with self._lock:
            return [e for e in self._entries.values() if e.stage == stage and e.state != "pending"]

    # ----------------------------------------------------------------- the thread
    def _follow(self, tail: TopicTail) -> None:
        try:
            while not self._stopping.is_set():
                records = tail.poll(500, 0.1)
                for record in records:
                    if record.value is None:  # a tombstone: that run's review is settled
                        if record.key is not None:
                            self._drop(record.key.decode(errors="replace"))
                        continue
                    try:
                        entry = self._codec.decode(record.value)
                    except SerdeError as exc:
                        log.warning("skipping an unreadable entry in %s: %s", self.topic, exc)
                        continue
                    self._apply(entry)
                if not records and not self._caught_up.is_set() and _caught_up(tail):
                    self._caught_up.set()
        except StreamsError as exc:
            log.error("review book stopped reading %s: %s", self.topic, exc)
        finally:
            tail.close()

    def _drop(self, run_id: str) -> None:
        with self._lock:
            known = self._entries.get(run_id)
            # Only a settled review goes: a pending entry after the tombstone (the run sent
            # to review again) was read after it, and a late tombstone must not hide one.
            if known is not None and known.state != "pending":
                del self._entries[run_id]

    def _apply(self, entry: ReviewEntry) -> None:
        with self._lock:
            known = self._entries.get(entry.run_id)
            if (
                known is not None
                and known.state != "pending"
                and entry.state == "pending"
                and known.admitted_at_ms >= entry.admitted_at_ms
            ):
                return  # first outcome stands: a late pending write does not reopen it
            if known == entry:
                return  # our own write, read back
            self._entries[entry.run_id] = entry
            queue = self._queues.get(entry.stage)
            if queue is not None:
                if entry.state == "pending":
                    queue.admit(entry.run_id, now=entry.admitted_at_ms / 1000)
                elif entry.state == "timed_out":
                    queue.expire(now=(entry.decided_at_ms or entry.deadline_ms) / 1000)
                elif entry.decision in ("approve", "decline"):
                    at = (entry.decided_at_ms or 0) / 1000
                    decision: Decision = "approve" if entry.decision == "approve" else "decline"
                    queue.decide(entry.run_id, decision, now=at)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(entry)


def _caught_up(tail: TopicTail) -> bool:
    try:
        return tail.caught_up(5.0)
    except StreamsError as exc:  # a new topic's leader not elected yet, a broker away
        log.debug("end of %s not known yet: %s", tail.topic, exc)
        return False


def _unbounded(config: ReviewConfig | None) -> ReviewConfig:
    # The book records what is in W.reviews; the bound is the stage worker's to keep.
    assert config is not None
    return dataclasses.replace(config, max_pending=1_000_000)
