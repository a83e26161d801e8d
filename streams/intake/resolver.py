"""Settles submissions whose outcome is unknown: a run whose first event was sent but never
acknowledged (the caller heard "unknown", not "refused"), and reservations nobody decided
(their replica died). Reads back what the broker holds (streams.kafka.key_search): a run
whose event is on the first stage's topics (or the delayed topic) was admitted, and gets
its admitted ledger entry; one whose event is not there never will be, and its
reservation is released. Either way a retry with the same idempotency key then gets the
truth: it collapses into the run, or is decided afresh.

Owns the set of runs to settle and its thread; decides nothing about capacity. A search
that fails (broker still away) is tried again; a run is never settled from an incomplete
search.
"""

from __future__ import annotations

import logging
import threading

from streams.clock import Clock
from streams.errors import StreamsError
from streams.intake.ledger_book import LedgerBook, LedgerEntry
from streams.intake.writer import IntakeWriter
from streams.kafka.client_config import ClientConfig
from streams.kafka.key_search import find_keys
from streams.topology import Stage, Topology
from streams.types import Lane

log = logging.getLogger(__name__)

#: How far before a submission's own clock reading its event can carry a timestamp.
_CLOCK_SLACK_MS = 2_000


class UnknownOutcomes:
    """`settle_after_s`: how long after a submission its writes may still land (the
    producer's message timeout, plus slack); no run is searched for earlier."""

    def __init__(
        self,
        client: ClientConfig,
        topology: Topology,
        entry: Stage,
        book: LedgerBook,
        writer: IntakeWriter,
        clock: Clock,
        *,
        settle_after_s: float,
        stale_after_s: float,
    ) -> None:
        self._client = client
        self._book = book
        self._writer = writer
        self._clock = clock
        self._settle_after_ms = int(settle_after_s * 1000)
        self._stale_after_ms = int(stale_after_s * 1000)
        specs = topology.all_topics()
        self._lane_of_topic: dict[str, Lane] = {
            topic: lane for lane, topic in entry.input_topics_by_lane.items()
        }
        self._delayed_topic = topology.delayed_topic
        self._topics = [
            (topic, specs[topic].partitions)
            for topic in (*self._lane_of_topic, topology.delayed_topic)
        ]
        self._lock = threading.Lock()
        self._pending: dict[str, LedgerEntry] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intake-resolver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(40.0)

    def add(self, reservation: LedgerEntry) -> None:
        """One of this replica's submissions ended unknown."""
        with self._lock:
            self._pending[reservation.run_id] = reservation

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.settle_due()
            except Exception:  # the resolver must outlive one bad round
                log.exception("settling unknown outcomes failed")

    def settle_due(self) -> None:
        """One round: search for every due run at once; settle those the search answers."""
        now_ms = int(self._clock.now() * 1000)
        for stale in self._book.stale_reservations(now_ms - self._stale_after_ms):
            with self._lock:
                self._pending.setdefault(stale.run_id, stale)
        with self._lock:
            due = {
                run_id: r
                for run_id, r in self._pending.items()
                if r.at_ms + self._settle_after_ms <= now_ms
            }
        if not due:
            return
        since_ms = min(r.at_ms for r in due.values()) - _CLOCK_SLACK_MS
        try:
            found = find_keys(self._client, self._topics, (k.encode() for k in due), since_ms)
        except StreamsError as exc:
            log.info("unknown outcomes wait for the broker (%d runs): %s", len(due), exc)
            return
        for run_id in due:
            self._settle(run_id, next(iter(found.get(run_id.encode(), [])), None))
        with self._lock:
            for run_id in due:
                self._pending.pop(run_id, None)

    def _settle(self, run_id: str, topic: str | None) -> None:
        live = self._book.entry(run_id)
        if live is None or live.phase != "reserved":
            return  # finished (a completion proved it ran), released, or admitted meanwhile
        if topic is None:
            log.warning("run %s was never written: its reservation is released", run_id)
            self._writer.release(run_id)
            return
        delayed = topic == self._delayed_topic
        lane = live.lane if delayed else self._lane_of_topic[topic]
        admitted = live._replace(lane=lane, phase="delayed" if delayed else "queued")
        self._book.admit(admitted)
        self._writer.rewrite(admitted)
        log.warning("run %s was written although unacknowledged: it counts as admitted", run_id)
