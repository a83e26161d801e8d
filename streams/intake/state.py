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

The ledger is read in offset order and no entry is passed over for want of the schema
registry. An entry in the Confluent wire format with a schema id this process has not seen
needs the registry to be read; while the registry does not answer (RegistryUnavailable) the
reader stops at that entry (it and those after it wait here, none is marked read, so the
book stays behind them), tries again on one capped backoff (streams.policy.outage_waits: 1 s
doubling to 30 s), and logs one line when the outage begins and one when the registry
answers. Meanwhile problem() says why the book is behind (the intake answers 503 with
Retry-After and reports not ready) and catch_up() does not return. Bytes that are no run
state (damage) are skipped, counted in `damaged_entries` and logged.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from streams.clock import Clock, SystemClock
from streams.errors import BrokerUnavailable, SerdeError
from streams.intake.finished_runs import RunOutcome
from streams.intake.ledger_book import LedgerBook, LedgerEntry, Phase, QueueCounts
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.policy.outage_waits import OutageWaits
from streams.registry import RegistryUnavailable
from streams.serde import SchemaStore, Serde
from streams.topology import Topology
from streams.types import Record

__all__ = ["LedgerEntry", "Phase", "QueueCounts", "RunStateView"]

RUN_STATE_SCHEMA = "dev.streams.RunState"
#: The header a dead letter carries its reason in (streams.runtime.outcomes writes it).
REASON_HEADER = "streams.reason"

log = logging.getLogger(__name__)


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
        # Ledger records fetched but not applied: the first waits for the schema registry.
        self._held: deque[Record] = deque()
        # Keyed by the waiting entry's offset. Its backoff runs on time.monotonic, not the
        # clock: retrying real I/O must go on when a test's fake clock stands still.
        self._registry: OutageWaits[int] = OutageWaits()
        self._behind: str | None = None  # why the book is behind the ledger, while it is
        #: Ledger entries skipped because their bytes are no run state.
        self.damaged_entries = 0

    # ------------------------------------------------------------ I/O thread
    def poll(self, *, finished: bool = True) -> int:
        """Read whatever arrived; returns how many records were applied. finished=False
        skips the completed and dead-letter topics (see Intake's I/O thread)."""
        applied = self._read_ledger()
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
            # Positions are past what waits in _held: read, not applied.
            if not self._held and all(_reached(tail.positions(), ends) for tail, ends in targets):
                return
            time.sleep(0.01)
        behind = self._behind
        raise TimeoutError(
            "the intake could not read its run ledger to the end in time"
            + ("" if behind is None else f": {behind}")
        )

    def problem(self) -> str | None:
        """Why decisions on this book would be untrue now: what LedgerBook.problem says
        (for good), or, while the reader waits for the schema registry, that the book is
        behind the ledger (until the registry answers)."""
        return super().problem() or self._behind

    def _read_ledger(self) -> int:
        """Apply ledger records in offset order, from those waiting for the registry first;
        stops at one the registry is needed for and cannot answer (it and the rest wait)."""
        held = self._held
        if held:
            if not self._registry.may_try(time.monotonic()):
                return 0
            records = list(held)
            held.clear()
        else:
            records = self._ledger.poll(5000, 0.0)
        applied = 0
        for i, record in enumerate(records):
            try:
                self._apply(record)
            except RegistryUnavailable as exc:
                held.extend(records[i:])
                self._registry_down(record.offset, exc)
                return applied
            if self._behind is not None:
                self._registry_through(record.offset)
            applied += 1
        return applied

    def _registry_down(self, offset: int, error: RegistryUnavailable) -> None:
        now = time.monotonic()
        began = self._registry.failed(offset, now)
        self._behind = (
            f"the schema registry does not answer ({error}): the run ledger's entry at offset "
            f"{offset} cannot be read yet, so this intake does not know every queued run and "
            "decides nothing until it answers; retry later"
        )
        if began:
            log.warning(
                "run ledger reading waits for the schema registry at offset %d (the entry is "
                "not skipped; the intake is not ready meanwhile): %s; trying again in %.1f s "
                "(up to every %g s)",
                offset, error, self._registry.wait_s(now), self._registry.backoff.cap_s,
            )  # fmt: skip

    def _registry_through(self, offset: int) -> None:
        lasted = self._registry.went_through(offset, time.monotonic())
        if lasted is not None:
            self._behind = None
            log.warning(
                "the schema registry answered after %.1f s: the run ledger is read on from "
                "offset %d",
                lasted, offset,
            )  # fmt: skip

    def _apply(self, record: Record) -> None:
        """Apply one ledger record. Raises RegistryUnavailable, having marked nothing read,
        when decoding it needs the registry and the registry does not answer."""
        offset = record.offset
        if record.key is None or not self.needs_reading(offset):
            self.skip_own(offset)  # marks it read; one's own write is in the book already
            return
        run_id = record.key.decode(errors="replace")
        if record.value is None:
            if not self.skip_own(offset):
                self.apply(offset, run_id, None)
            return
        try:
            data = self.serde.decode(record.value)
        except RegistryUnavailable:
            raise  # not damage: the entry is read once the registry answers
        except SerdeError as exc:
            # Bytes that are no run state: one damaged entry must not stop the view.
            self.skip_own(offset)
            self.damaged_entries += 1
            if self.damaged_entries % 100 == 1:  # the 1st, 101st, ...: not a line each
                log.error(
                    "run ledger entry at offset %d (run %r) cannot be decoded, skipped "
                    "(%d so far): %s",
                    offset, run_id, self.damaged_entries, exc,
                )  # fmt: skip
            return
        if not self.skip_own(offset):
            self.apply(offset, run_id, data)

    def close(self) -> None:
        for tail in (self._ledger, *self._done):
            tail.close()


def _reached(positions: dict[int, int], ends: dict[int, int]) -> bool:
    return all(end == 0 or positions.get(p, -1) >= end for p, end in ends.items())
