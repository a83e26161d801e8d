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
from collections import OrderedDict
from collections.abc import Iterable
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
    oldest_admitted_ms: dict[Lane, int]


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
                self._entries.pop(run_id, None)
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
            self._entries[run_id] = _entry(data, offset)

    def _finish(self, run_id: str) -> None:
        with self._lock:
            if self._entries.pop(run_id, None) is None:
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
                self._entries[entry.run_id] = entry

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._entries.pop(run_id, None)

    def counts(self, *, before_offset: int | None = None, now_ms: int | None = None) -> QueueCounts:
        """Queued runs (reservations included). With before_offset, only entries earlier
        in the ledger: what a reservation at that offset is decided on."""
        with self._lock:
            entries = list(self._entries.values())
        return _count(self._live(entries, before_offset, now_ms))

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

    def _live(
        self, entries: Iterable[LedgerEntry], before_offset: int | None, now_ms: int | None
    ) -> list[LedgerEntry]:
        live = []
        for e in entries:
            if before_offset is not None and not (0 <= e.offset < before_offset):
                continue
            if (
                e.phase == "reserved"
                and now_ms is not None
                and now_ms - e.at_ms > self._reservation_timeout_ms
            ):
                continue  # its replica died before deciding: stop holding capacity for it
            live.append(e)
        return live


def _count(entries: list[LedgerEntry]) -> QueueCounts:
    by_tenant: dict[str, int] = {}
    by_lane: dict[Lane, int] = dict.fromkeys(LANES, 0)
    oldest: dict[Lane, int] = {}
    delayed = 0
    for e in entries:
        by_tenant[e.tenant] = by_tenant.get(e.tenant, 0) + 1
        by_lane[e.lane] += 1
        delayed += e.phase == "delayed"
        if e.phase != "reserved" and (e.lane not in oldest or e.at_ms < oldest[e.lane]):
            oldest[e.lane] = e.at_ms
    return QueueCounts(len(entries), delayed, by_tenant, by_lane, oldest)


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
