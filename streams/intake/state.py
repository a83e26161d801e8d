"""The run ledger every intake replica shares, and each replica's view of it.

The ledger is the workflow's runs topic: compacted, ONE partition, keyed by run id. A
replica that wants to admit a run first appends a reservation and waits to read it back;
it then decides from exactly the entries before its reservation in the log. Reservations
still undecided count as queued. So decisions are made in one total order across
replicas, and bounds hold exactly: R replicas cannot overshoot a workflow or tenant bound
(a reservation left by a crashed replica is counted for `reservation_timeout_s`, which can
only under-admit). Finished runs are learned from the completed and dead-letter topics.
Duplicates resolve the same way: the first entry with an idempotency key, in log order,
owns it.

Owns the ledger's reading and the counts derived from it; the I/O thread calls poll(), any
thread may read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Any, Literal

from streams.errors import BrokerUnavailable, SerdeError
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.serde import SchemaStore, Serde
from streams.topology import Topology
from streams.types import LANES, Lane, Record

RUN_STATE_SCHEMA = "dev.streams.RunState"
Phase = Literal["reserved", "queued", "delayed"]
# A completion can be read before the admission it ends (different topics); remember it
# long enough for the admission to arrive, and no longer.
_EARLY_FINISH_KEEP = 50_000


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    run_id: str
    tenant: str
    lane: Lane
    phase: Phase
    at_ms: int
    idempotency_key: str | None
    replica: str
    offset: int  # of the reservation (the entry's place in the total order); -1: not read yet


@dataclass(frozen=True, slots=True)
class QueueCounts:
    total: int
    delayed: int
    by_tenant: dict[str, int]
    by_lane: dict[Lane, int]


class _Totals:
    """Running counts of live entries, so a decision never rescans the ledger."""

    __slots__ = ("by_lane", "by_tenant", "delayed", "total")

    def __init__(self) -> None:
        self.total = 0
        self.delayed = 0
        self.by_tenant: dict[str, int] = {}
        self.by_lane: dict[Lane, int] = dict.fromkeys(LANES, 0)

    def add(self, entry: LedgerEntry, sign: int) -> None:
        self.total += sign
        self.delayed += sign * (entry.phase == "delayed")
        self.by_lane[entry.lane] += sign
        left = self.by_tenant.get(entry.tenant, 0) + sign
        if left:
            self.by_tenant[entry.tenant] = left
        else:
            self.by_tenant.pop(entry.tenant, None)

    def copy(self) -> _Totals:
        other = _Totals()
        other.total, other.delayed = self.total, self.delayed
        other.by_tenant = dict(self.by_tenant)
        other.by_lane = dict(self.by_lane)
        return other


class RunStateView:
    def __init__(
        self,
        client: ClientConfig,
        topology: Topology,
        store: SchemaStore,
        *,
        reservation_timeout_s: float = 30.0,
    ) -> None:
        specs = topology.all_topics()
        self.serde = Serde(store, RUN_STATE_SCHEMA)
        self._ledger = TopicTail(client, topology.runs_topic, 1, fetch_wait_ms=2)
        self._done = [
            TopicTail(client, topic, specs[topic].partitions, fetch_wait_ms=50)
            for topic in (topology.completed_topic, topology.dead_letter_topic)
        ]
        self._reservation_timeout_ms = int(reservation_timeout_s * 1000)
        self._lock = threading.Lock()
        self._entries: dict[str, LedgerEntry] = {}
        self._totals = _Totals()
        # Entries in ledger order, to find the few at or after a reservation's offset;
        # items of entries that are gone are skipped and dropped from the left.
        self._order: deque[tuple[int, str]] = deque()
        self._unread: set[str] = set()  # one's own entries not yet read back
        self._reserved: set[str] = set()  # undecided reservations (they may time out)
        self._finished_early: OrderedDict[str, None] = OrderedDict()
        self._read_to = -1

    # ------------------------------------------------------------ I/O thread
    def poll(self) -> int:
        """Read whatever arrived; returns how many records were applied."""
        applied = 0
        for record in self._ledger.poll(5000, 0.0):
            self._apply(record)
            applied += 1
        for tail in self._done:
            for record in tail.poll(2000, 0.0):
                if record.key is not None:
                    self._finish(record.key.decode(errors="replace"))
                    applied += 1
        return applied

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
        if record.key is None:
            return
        run_id = record.key.decode(errors="replace")
        with self._lock:
            self._read_to = record.offset
            if record.value is None:  # tombstone: finished, or reservation rejected
                self._drop(run_id)
                return
            try:
                data = self.serde.decode(record.value)
            except SerdeError:
                return  # one damaged entry must not stop the view
            if run_id in self._finished_early:
                del self._finished_early[run_id]
                return
            known = self._entries.get(run_id)
            # The reservation fixes the entry's place in the order; later entries only
            # change its phase.
            offset = known.offset if known is not None and known.offset >= 0 else record.offset
            self._put(_entry(data, offset))
            self._unread.discard(run_id)
            if known is None or known.offset < 0:
                self._order.append((offset, run_id))

    def _put(self, entry: LedgerEntry) -> None:
        """Insert or replace an entry, keeping the totals (call with the lock held)."""
        known = self._entries.get(entry.run_id)
        if known is not None:
            self._totals.add(known, -1)
        self._entries[entry.run_id] = entry
        self._totals.add(entry, +1)
        if entry.phase == "reserved":
            self._reserved.add(entry.run_id)
        else:
            self._reserved.discard(entry.run_id)

    def _drop(self, run_id: str) -> bool:
        """Remove an entry, keeping the totals (call with the lock held)."""
        known = self._entries.pop(run_id, None)
        if known is None:
            return False
        self._totals.add(known, -1)
        self._unread.discard(run_id)
        self._reserved.discard(run_id)
        while self._order and self._order[0][1] not in self._entries:
            self._order.popleft()
        return True

    def _finish(self, run_id: str) -> None:
        with self._lock:
            if not self._drop(run_id):
                self._finished_early[run_id] = None
                while len(self._finished_early) > _EARLY_FINISH_KEEP:
                    self._finished_early.popitem(last=False)

    # ------------------------------------------------------------ any thread
    def read_past(self, offset: int) -> bool:
        with self._lock:
            return self._read_to >= offset

    def note(self, entry: LedgerEntry) -> None:
        """Count one's own entry at once, before it is read back from the ledger."""
        with self._lock:
            known = self._entries.get(entry.run_id)
            if known is not None and known.offset >= 0:
                entry = replace(entry, offset=known.offset)
            if entry.run_id not in self._finished_early:
                self._put(entry)
                if entry.offset < 0:
                    self._unread.add(entry.run_id)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._drop(run_id)

    def counts(self, *, before_offset: int | None = None, now_ms: int | None = None) -> QueueCounts:
        """Queued runs (reservations included). With before_offset, only entries earlier
        in the ledger: what a reservation at that offset is decided on. Costs the entries
        after that offset and the undecided reservations, not the whole ledger."""
        with self._lock:
            totals = self._totals.copy()
            excluded: dict[str, LedgerEntry] = {}
            if before_offset is not None:
                for run_id in self._unread:
                    excluded[run_id] = self._entries[run_id]
                for offset, run_id in reversed(self._order):
                    if offset < before_offset:
                        break
                    entry = self._entries.get(run_id)
                    if entry is not None and entry.offset == offset:
                        excluded[run_id] = entry
            if now_ms is not None:
                # A reservation its replica never decided (it died) stops holding capacity.
                for run_id in self._reserved:
                    entry = self._entries[run_id]
                    if now_ms - entry.at_ms > self._reservation_timeout_ms:
                        excluded[run_id] = entry
        for entry in excluded.values():
            totals.add(entry, -1)
        return QueueCounts(totals.total, totals.delayed, totals.by_tenant, totals.by_lane)

    def oldest_admitted_ms(self) -> dict[Lane, int]:
        """Admission time of the oldest admitted, unfinished run per lane (a full scan: for
        reports, not for decisions)."""
        with self._lock:
            entries = list(self._entries.values())
        oldest: dict[Lane, int] = {}
        for e in entries:
            if e.phase != "reserved" and (e.lane not in oldest or e.at_ms < oldest[e.lane]):
                oldest[e.lane] = e.at_ms
        return oldest

    def first_with_key(
        self, tenant: str, key: str, since_ms: int, *, before_offset: int | None = None
    ) -> LedgerEntry | None:
        """The earliest live entry of the tenant's idempotency key inside the window."""
        with self._lock:
            matches = [
                e
                for e in self._entries.values()
                if e.idempotency_key == key and e.tenant == tenant and e.at_ms >= since_ms
            ]
        ordered = [e for e in matches if e.offset >= 0]
        if before_offset is not None:
            ordered = [e for e in ordered if e.offset < before_offset]
        return min(ordered, key=lambda e: e.offset) if ordered else None

    def entry(self, run_id: str) -> LedgerEntry | None:
        with self._lock:
            return self._entries.get(run_id)

    def close(self) -> None:
        for tail in (self._ledger, *self._done):
            tail.close()


def _entry(data: dict[str, Any], offset: int) -> LedgerEntry:
    return LedgerEntry(
        run_id=data["run_id"],
        tenant=data["tenant"],
        lane=data["lane"],
        phase=data["state"],
        at_ms=data["admitted_at"],
        idempotency_key=data["idempotency_key"],
        replica=data["replica"],
        offset=offset,
    )


def _reached(positions: dict[int, int], ends: dict[int, int]) -> bool:
    return all(end == 0 or positions.get(p, -1) >= end for p, end in ends.items())
