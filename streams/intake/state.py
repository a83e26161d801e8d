"""The intake's view of admitted runs, shared through Kafka: every replica reads the
compacted runs topic, the completed topic and the dead-letter topic in full, so all replicas
count the same queued runs; and the claims topic, whose log order settles duplicates.

Owns the counts, the oldest queued age and the claim index. Reads happen on the intake's
I/O thread (`poll`); reads of the counts are thread-safe. Consistency: a replica sees its
own admissions at once and other replicas' within one poll after their broker ack (tens of
milliseconds on one cluster), which bounds how far R replicas can overshoot a limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from streams.errors import BrokerUnavailable, SerdeError
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.serde import SchemaStore, Serde
from streams.topology import Topology
from streams.types import LANES, Lane, Record

RUN_STATE_SCHEMA = "dev.streams.RunState"
CLAIM_SCHEMA = "dev.streams.IdempotencyClaim"
# A completion can be read before the admission it ends (different topics); remember it
# long enough for the admission to arrive, and no longer.
_EARLY_FINISH_KEEP = 50_000


@dataclass(frozen=True, slots=True)
class QueuedRun:
    run_id: str
    tenant: str
    lane: Lane
    admitted_at_ms: int
    delayed: bool
    replica: str


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: str
    lane: Lane
    claimed_at_ms: int
    offset: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    total: int
    delayed: int
    by_tenant: dict[str, int]
    by_lane: dict[Lane, int]
    oldest_admitted_ms: dict[Lane, int]


@dataclass
class _Claims:
    by_key: dict[str, list[Claim]] = field(default_factory=dict)


class RunStateView:
    def __init__(self, client: ClientConfig, topology: Topology, store: SchemaStore) -> None:
        specs = topology.all_topics()
        self._runs_serde = Serde(store, RUN_STATE_SCHEMA)
        self._claim_serde = Serde(store, CLAIM_SCHEMA)
        self._runs = TopicTail(
            client, topology.runs_topic, specs[topology.runs_topic].partitions, fetch_wait_ms=20
        )
        self._done = [
            TopicTail(client, topic, specs[topic].partitions, fetch_wait_ms=50)
            for topic in (topology.completed_topic, topology.dead_letter_topic)
        ]
        self._claims_tail = TopicTail(
            client, topology.claims_topic, specs[topology.claims_topic].partitions, fetch_wait_ms=5
        )
        self._lock = threading.Lock()
        self._queued: dict[str, QueuedRun] = {}
        self._finished_early: OrderedDict[str, None] = OrderedDict()
        self._claims = _Claims()
        self._claims_read_to: dict[int, int] = {}

    # ------------------------------------------------------------ I/O thread
    def poll(self) -> int:
        """Read whatever arrived; returns how many records were applied."""
        applied = 0
        for record in self._runs.poll(2000, 0.0):
            self._apply_run_record(record)
            applied += 1
        for tail in self._done:
            for record in tail.poll(2000, 0.0):
                if record.key is not None:
                    self._finish(record.key.decode(errors="replace"))
                    applied += 1
        for record in self._claims_tail.poll(2000, 0.0):
            self._apply_claim(record)
            applied += 1
        return applied

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read every topic to its current end (before serving the first request)."""
        tails = [self._runs, *self._done, self._claims_tail]
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
        raise TimeoutError("the intake could not read its run state to the end in time")

    def _apply_run_record(self, record: Record) -> None:
        if record.key is None:
            return
        run_id = record.key.decode(errors="replace")
        if record.value is None:  # tombstone: the run finished
            self._finish(run_id)
            return
        try:
            data = self._runs_serde.decode(record.value)
        except SerdeError:
            return  # one damaged record must not stop the view; counts stay conservative
        with self._lock:
            if run_id in self._finished_early:
                del self._finished_early[run_id]
                return
            self._queued[run_id] = _queued_from(data)

    def _finish(self, run_id: str) -> None:
        with self._lock:
            if self._queued.pop(run_id, None) is None:
                self._finished_early[run_id] = None
                while len(self._finished_early) > _EARLY_FINISH_KEEP:
                    self._finished_early.popitem(last=False)

    def _apply_claim(self, record: Record) -> None:
        if record.value is None:
            return
        try:
            data = self._claim_serde.decode(record.value)
        except SerdeError:
            return
        claim = Claim(data["run_id"], data["lane"], data["claimed_at"], record.offset)
        with self._lock:
            self._claims.by_key.setdefault(data["claim_key"], []).append(claim)
            self._claims_read_to[record.partition] = record.offset

    # ------------------------------------------------------------ any thread
    def note_admitted(self, run: QueuedRun) -> None:
        """Count one's own admission at once, before it is read back from the topic."""
        with self._lock:
            if run.run_id not in self._finished_early:
                self._queued[run.run_id] = run

    def forget(self, run_id: str) -> None:
        """Undo note_admitted for a run that was not admitted after all."""
        with self._lock:
            self._queued.pop(run_id, None)

    def counts(self) -> QueueCounts:
        with self._lock:
            runs = list(self._queued.values())
        by_tenant: dict[str, int] = {}
        by_lane: dict[Lane, int] = dict.fromkeys(LANES, 0)
        oldest: dict[Lane, int] = {}
        delayed = 0
        for run in runs:
            by_tenant[run.tenant] = by_tenant.get(run.tenant, 0) + 1
            by_lane[run.lane] += 1
            delayed += run.delayed
            if run.lane not in oldest or run.admitted_at_ms < oldest[run.lane]:
                oldest[run.lane] = run.admitted_at_ms
        return QueueCounts(len(runs), delayed, by_tenant, by_lane, oldest)

    def is_queued(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._queued

    def claims_read_past(self, partition: int, offset: int) -> bool:
        with self._lock:
            return self._claims_read_to.get(partition, -1) >= offset

    def first_claim(self, claim_key: str, since_ms: int) -> Claim | None:
        """The earliest claim of the key inside the window, in log order."""
        with self._lock:
            claims = self._claims.by_key.get(claim_key, [])
            live = [c for c in claims if c.claimed_at_ms >= since_ms]
            if len(live) != len(claims):  # drop expired claims: memory stays bounded
                if live:
                    self._claims.by_key[claim_key] = live
                else:
                    self._claims.by_key.pop(claim_key, None)
        return min(live, key=lambda c: c.offset) if live else None

    def close(self) -> None:
        for tail in (self._runs, *self._done, self._claims_tail):
            tail.close()


def _queued_from(data: dict[str, Any]) -> QueuedRun:
    return QueuedRun(
        run_id=data["run_id"],
        tenant=data["tenant"],
        lane=data["lane"],
        admitted_at_ms=data["admitted_at"],
        delayed=data["state"] == "delayed",
        replica=data["replica"],
    )


def _reached(positions: dict[int, int], ends: dict[int, int]) -> bool:
    return all(end == 0 or positions.get(p, -1) >= end for p, end in ends.items())
