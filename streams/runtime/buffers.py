"""Each consumed record's life in its partition, and the choice of what to start next.

Owns the record lifecycle — waiting → running → decided → sent → settled — and the counts
derived from it (what the partition bound limits, what is still unsettled), per-key
ordering (records of one key start in offset order, one at a time), lane priority and
round-robin across partitions. The one place a transition is checked. Must not talk to
Kafka, run handlers or decide outcomes: plain data.

A record is "settled" when the broker has acknowledged every write of its outcome; only
then does its offset count as complete for commits (invariant 1).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NoReturn

from streams.events import TaskEvent
from streams.policy.offsets import PartitionOffsets
from streams.runtime.context import Emit
from streams.types import DeadLetterReason, Lane, Record, TopicPartition

# States of a RecordWork (ints: compared once per transition on the poll thread).
WAITING, RUNNING, DECIDED, SENT, SETTLED = range(5)
_STATE_NAMES = ("waiting", "running", "decided", "sent", "settled")


class LifecycleError(RuntimeError):
    """A record moved out of order through its lifecycle: a bug in streams, never user
    code. Raised so the worker stops before committing anything it cannot account for."""


class RecordWork:
    """One consumed record from arrival to settlement, with its decided outcome.

    `event` is None when the value did not decode (`decode_error` says why). The outcome
    is set by `PartitionBuffer.decide`: `emits` for a success (empty: done, nothing to
    send), or `reason` (+ `error`) for a dead letter.
    """

    __slots__ = (
        "attempts",
        "decode_error",
        "emits",
        "error",
        "event",
        "expires_at",
        "owner",
        "reason",
        "record",
        "seq",
        "state",
    )

    def __init__(
        self,
        record: Record,
        event: TaskEvent | None,
        decode_error: Exception | None = None,
        owner: PartitionBuffer | None = None,
    ) -> None:
        self.record = record
        self.event = event
        self.decode_error = decode_error
        self.owner = owner
        self.state = WAITING
        self.seq = 0  # dispatch order, set when it starts (the dead-letter valve's order)
        #: Wall time (s) from which it counts as expired; set at dispatch.
        self.expires_at = math.inf
        self.emits: Sequence[Emit] = ()
        self.reason: DeadLetterReason | None = None
        self.error: BaseException | None = None
        self.attempts = 0

    @property
    def state_name(self) -> str:
        return _STATE_NAMES[self.state]

    def enqueued_ms(self) -> int:
        """When it entered this stage's queue (its Kafka timestamp if undecodable)."""
        return self.event.enqueued_at_ms if self.event is not None else self.record.timestamp_ms


class PartitionBuffer:
    """The lives of one assigned partition's records.

    `fill` (waiting + running + decided) is what the per-partition bound limits; outcomes
    already sent and awaiting the broker's acks do not count: with a fast handler they are
    most of a partition's records at any moment, and counting them paused partitions many
    times a second, each pause dropping the client's prefetched records (10x less
    throughput at a bound of 100, measured). The worker caps those across partitions
    instead (WorkerOptions.max_unacknowledged).

    `live` turns False when the partition is revoked or lost: every later transition of its
    records is refused (returns False), since the new owner redoes them from the last commit.
    """

    __slots__ = ("bound", "decided", "lane", "live", "offsets", "running", "sent", "tp", "waiting")

    def __init__(
        self, tp: TopicPartition, lane: Lane, bound: int, offsets: PartitionOffsets | None = None
    ) -> None:
        self.tp = tp
        self.lane = lane
        self.bound = bound
        self.offsets = offsets if offsets is not None else PartitionOffsets()
        self.waiting: deque[RecordWork] = deque()
        self.running = 0
        self.decided = 0
        self.sent = 0
        self.live = True

    @property
    def fill(self) -> int:
        return len(self.waiting) + self.running + self.decided

    @property
    def unsettled(self) -> int:
        """Records consumed and not yet settled: 0 means the partition is idle."""
        return len(self.waiting) + self.running + self.decided + self.sent

    @property
    def in_flight(self) -> int:
        """Records taken for dispatch and not yet settled."""
        return self.running + self.decided + self.sent

    def oldest_enqueued_ms(self) -> int | None:
        """Enqueue time of the oldest waiting record."""
        return self.waiting[0].enqueued_ms() if self.waiting else None

    # ----------------------------------------------------------------- transitions
    def accept(
        self, record: Record, event: TaskEvent | None, decode_error: Exception | None = None
    ) -> RecordWork:
        """A record consumed from this partition (in offset order): it waits."""
        self.offsets.track(record.offset)
        work = RecordWork(record, event, decode_error, self)
        self.waiting.append(work)
        return work

    def start(self, work: RecordWork) -> None:
        """`work` was taken out of `waiting` for dispatch."""
        if work.state != WAITING:
            _refuse(work, WAITING)
        work.state = RUNNING
        self.running += 1

    def decide(
        self,
        work: RecordWork,
        emits: Sequence[Emit] = (),
        reason: DeadLetterReason | None = None,
        error: BaseException | None = None,
        attempts: int = 0,
    ) -> bool:
        """Its outcome is known: `emits` (success) or dead letter `reason`. False when the
        partition is no longer ours (the outcome is dropped, nothing is sent)."""
        if not self.live:
            return False
        if work.state != RUNNING:
            _refuse(work, RUNNING)
        work.state = DECIDED
        work.emits, work.reason, work.error, work.attempts = emits, reason, error, attempts
        self.running -= 1
        self.decided += 1
        return True

    def release(self, work: RecordWork) -> None:
        """Its outcome's writes are handed to the producer."""
        if work.state != DECIDED:
            _refuse(work, DECIDED)
        work.state = SENT
        self.decided -= 1
        self.sent += 1

    def settle(self, work: RecordWork) -> bool:
        """The broker acknowledged every write: its offset is complete. False when the
        partition is no longer ours."""
        if not self.live:
            return False
        if work.state != SENT:
            _refuse(work, SENT)
        work.state = SETTLED
        self.sent -= 1
        self.offsets.complete(work.record.offset)
        return True

    def close(self) -> deque[RecordWork]:
        """The partition is revoked or lost: refuse later transitions; returns the records
        that never started (their keys are released by the caller)."""
        self.live = False
        waiting, self.waiting = self.waiting, deque()
        return waiting


def _refuse(work: RecordWork, expected: int) -> NoReturn:
    # The checks are inlined at each transition (this runs several times per record);
    # only a failing one pays for the call.
    raise LifecycleError(
        f"{work.record.topic}[{work.record.partition}]@{work.record.offset} is "
        f"{work.state_name}, expected {_STATE_NAMES[expected]}"
    )


def take_ready(
    buffers: Sequence[PartitionBuffer],
    lanes: Sequence[Lane],
    busy_keys: set[bytes],
    limit: int,
    start_at: int = 0,
) -> list[RecordWork]:
    """Remove up to `limit` records that may start now, start them, and return them.

    Lanes are served strictly in order; within a lane, partitions take turns starting at
    `start_at`, one record per turn. A record waits while an earlier record of its key is
    in flight (busy_keys) or still waiting ahead of it. Keys it starts are added to busy_keys.
    """
    chosen: list[RecordWork] = []
    if limit <= 0:
        return chosen
    for lane in lanes:
        in_lane = [b for b in buffers if b.lane == lane and b.waiting]
        if not in_lane:
            continue
        n = len(in_lane)
        rotated = [in_lane[(start_at + i) % n] for i in range(n)]
        progress = True
        while progress and len(chosen) < limit:
            progress = False
            for buffer in rotated:
                if len(chosen) >= limit:
                    break
                work = _first_startable(buffer.waiting, busy_keys)
                if work is None:
                    continue
                if work is buffer.waiting[0]:
                    buffer.waiting.popleft()
                else:
                    buffer.waiting.remove(work)
                buffer.start(work)
                if work.record.key is not None:
                    busy_keys.add(work.record.key)
                chosen.append(work)
                progress = True
        if len(chosen) >= limit:
            break
    return chosen


def _first_startable(waiting: Iterable[RecordWork], busy_keys: set[bytes]) -> RecordWork | None:
    seen: set[bytes] = set()
    for work in waiting:
        key = work.record.key
        if key is None:
            return work
        if key not in busy_keys and key not in seen:
            return work
        seen.add(key)
    return None
