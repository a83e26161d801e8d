"""The run ledger every intake replica shares, and each replica's view of it.

The ledger is the workflow's runs topic: compacted, ONE partition, keyed by run id. A
replica that wants to admit a run first appends a reservation and waits until it knows
every entry before it: it reads the ledger back, unless everything between what it has
read and its reservation is its own acknowledged writes (then nobody else wrote there).
It then decides from exactly the entries before its reservation in the log. Reservations
still undecided count as queued. So decisions are made in one total order across
replicas, and bounds hold exactly: R replicas cannot overshoot a workflow or tenant bound
(a reservation left by a crashed replica is counted for `reservation_timeout_s`, which can
only under-admit). Finished runs are learned from the completed and dead-letter topics,
and recorded in the ledger as small 'finished' entries (tombstoned when their collapse
window ends), so a restarted replica knows them without those topics.
Duplicates resolve the same way: the first entry with an idempotency key, in log order,
owns it.

Owns the ledger's reading (the counts derived from it live in streams.intake.ledger_book);
the I/O thread calls poll(), any thread may read.
"""

from __future__ import annotations

import time

from streams.clock import Clock, SystemClock
from streams.errors import BrokerUnavailable, SerdeError
from streams.intake.finished_runs import RunOutcome
from streams.intake.ledger_book import LedgerBook, LedgerEntry, Phase, QueueCounts
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.serde import SchemaStore, Serde
from streams.topology import Topology
from streams.types import Record

__all__ = ["LedgerEntry", "Phase", "QueueCounts", "RunStateView"]

RUN_STATE_SCHEMA = "dev.streams.RunState"
#: The header a dead letter carries its reason in (streams.runtime.outcomes writes it).
REASON_HEADER = "streams.reason"


class RunStateView(LedgerBook):
    """The ledger book of streams.intake.ledger_book, fed from the broker."""

    def __init__(
        self,
        client: ClientConfig,
        topology: Topology,
        store: SchemaStore,
        *,
        replica_id: str = "",
        collapse_window_s: float = 86_400.0,
        reservation_timeout_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            reservation_timeout_s=reservation_timeout_s,
            replica_id=replica_id,
            collapse_window_s=collapse_window_s,
        )
        self._clock = clock or SystemClock()
        self._dead_letter_topic = topology.dead_letter_topic
        specs = topology.all_topics()
        self.serde = Serde(store, RUN_STATE_SCHEMA)
        # The broker answers a waiting fetch as soon as new entries arrive; a short wait
        # would only add idle fetches (CPU on both sides) while the ledger is quiet.
        self._ledger = TopicTail(client, topology.runs_topic, 1, fetch_wait_ms=100)
        # Escalated runs (retries exhausted, Escalate) end on their own topic, which only
        # workflows that retry have.
        self._escalations_topic = topology.escalations_topic
        ended = [topology.completed_topic, topology.dead_letter_topic, self._escalations_topic]
        self._done = [
            TopicTail(client, topic, specs[topic].partitions, fetch_wait_ms=50)
            for topic in ended
            if topic in specs
        ]

    # ------------------------------------------------------------ I/O thread
    def poll(self, *, finished: bool = True) -> int:
        """Read whatever arrived; returns how many records were applied. finished=False
        skips the completed and dead-letter topics (see Intake's I/O thread)."""
        applied = 0
        for record in self._ledger.poll(5000, 0.0):
            self._apply(record)
            applied += 1
        if not finished:
            return applied
        now_ms = int(self._clock.now() * 1000)
        for tail in self._done:
            for record in tail.poll(2000, 0.0):
                if record.key is not None:
                    outcome, reason = self._how_it_ended(record)
                    self.finish(record.key.decode(errors="replace"), outcome, reason, now_ms=now_ms)
                    applied += 1
        return applied

    def _how_it_ended(self, record: Record) -> tuple[RunOutcome, str | None]:
        if record.topic != self._dead_letter_topic and record.topic != self._escalations_topic:
            return "completed", None
        reason = next(
            (v.decode(errors="replace") for k, v in record.headers if k == REASON_HEADER), None
        )
        if record.topic == self._escalations_topic:
            return "escalated", reason
        return ("escalated" if reason == "escalated" else "dead_lettered"), reason

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read the ledger and the finished topics to their current ends."""
        tails = [self._ledger, *self._done]
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                targets = [(tail, tail.end_offsets()) for tail in tails]
                break
            except BrokerUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        while time.monotonic() < deadline:
            self.poll()
            if all(_reached(tail.positions(), ends) for tail, ends in targets):
                return
            time.sleep(0.01)
        raise TimeoutError("the intake could not read its run ledger to the end in time")

    def _apply(self, record: Record) -> None:
        if self.skip_own(record.offset) or record.key is None:
            return
        run_id = record.key.decode(errors="replace")
        if record.value is None:
            self.apply(record.offset, run_id, None)
            return
        try:
            data = self.serde.decode(record.value)
        except SerdeError:
            return  # one damaged entry must not stop the view
        self.apply(record.offset, run_id, data)

    def close(self) -> None:
        for tail in (self._ledger, *self._done):
            tail.close()


def _reached(positions: dict[int, int], ends: dict[int, int]) -> bool:
    return all(end == 0 or positions.get(p, -1) >= end for p, end in ends.items())
