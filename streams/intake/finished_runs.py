"""Finished runs, as one replica's ledger book keeps them: for duplicate collapse and run
status until the collapse window ends, and which ledger writes that asks of this replica
(a 'finished' entry once a run ends; a tombstone once its window is over).

Owns that bookkeeping and the rule of who writes; must not do I/O or take a lock (the
ledger book calls it with its own lock held).

Who writes: the replica that admitted a run records its end at once; any other replica
only if the ledger still does not show it after `takeover_after_s` (the admitting replica
may be gone). Likewise the replica that recorded the end writes the tombstone when the
window closes, the others `takeover_after_s` later. A write both make is harmless (same
key, same content, compaction keeps one): the rule only keeps the ledger from taking R
copies of every run.

A run without an idempotency key has nothing to collapse: it is kept for run status for
at most KEYLESS_KEEP_S (memory: about 650 bytes per finished run kept).
"""

from __future__ import annotations

import heapq
from typing import Literal, NamedTuple

from streams.types import Lane

RunOutcome = Literal["completed", "dead_lettered", "escalated"]

#: A finished entry's state in the ledger.
FINISHED = "finished"
#: How long a finished run without an idempotency key stays (for run status only).
KEYLESS_KEEP_S = 3600.0


class FinishedRun(NamedTuple):
    run_id: str
    tenant: str
    lane: Lane
    at_ms: int  # submitted: the collapse window counts from here
    idempotency_key: str | None
    deadline_ms: int | None
    finished_ms: int
    outcome: RunOutcome
    reason: str | None
    replica: str  # who recorded the end in the ledger (or admitted it, until then)

    @property
    def phase(self) -> Literal["finished"]:
        return "finished"


class FinishedRuns:
    def __init__(self, replica_id: str, *, window_ms: int, takeover_after_ms: int) -> None:
        self._replica_id = replica_id
        self._window_ms = window_ms
        self._keyless_ms = min(window_ms, int(KEYLESS_KEEP_S * 1000))
        self._takeover_ms = takeover_after_ms
        self._runs: dict[str, FinishedRun] = {}
        self._by_key: dict[tuple[str, str], str] = {}  # the earliest submitted owns the key
        # (at_ms, run id) of keyed and of keyless runs; stale items are skipped.
        self._by_age: list[tuple[int, str]] = []
        self._keyless_by_age: list[tuple[int, str]] = []
        # Ends this replica learned of and the ledger does not show yet: run id -> when
        # this replica may write it (now for its own runs, later for others').
        self._unrecorded: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> FinishedRun | None:
        return self._runs.get(run_id)

    def owner_of(self, tenant: str, key: str, since_ms: int) -> FinishedRun | None:
        run_id = self._by_key.get((tenant, key))
        run = self._runs.get(run_id) if run_id is not None else None
        return run if run is not None and run.at_ms >= since_ms else None

    def learned(self, run: FinishedRun, now_ms: int, *, admitted_by: str | None) -> None:
        """The run ended (read from a completion or dead-letter topic); the ledger does not
        say so yet. `admitted_by`: the replica named in its live entry, if known."""
        if run.run_id in self._runs:
            return  # already finished: the ledger or an earlier completion said so
        self._add(run)
        mine = admitted_by is None or admitted_by == self._replica_id
        self._unrecorded[run.run_id] = now_ms if mine else now_ms + self._takeover_ms

    def recorded(self, run: FinishedRun) -> None:
        """The ledger says the run finished (read back, or written by this replica)."""
        self._unrecorded.pop(run.run_id, None)
        known = self._runs.get(run.run_id)
        if known is None or known.replica != run.replica:
            self._add(run)

    def forget(self, run_id: str) -> FinishedRun | None:
        """A tombstone was read or written: the run is gone from the ledger."""
        self._unrecorded.pop(run_id, None)
        run = self._runs.pop(run_id, None)
        if run is not None and run.idempotency_key is not None:
            index = (run.tenant, run.idempotency_key)
            if self._by_key.get(index) == run_id:
                del self._by_key[index]
        return run

    def to_record(self, now_ms: int) -> list[FinishedRun]:
        """Ends this replica should write to the ledger now, as this replica's entries
        (the caller writes each, then calls recorded())."""
        due = [run_id for run_id, at in self._unrecorded.items() if at <= now_ms]
        runs: list[FinishedRun] = []
        for run_id in due:
            del self._unrecorded[run_id]
            run = self._runs.get(run_id)
            if run is not None:
                runs.append(run._replace(replica=self._replica_id))
        return runs

    def to_tombstone(self, now_ms: int) -> list[str]:
        """Finished runs whose collapse window is over and that this replica should end
        (the caller writes a tombstone for each, then calls forget())."""
        return self._closed(self._by_age, now_ms - self._window_ms) + self._closed(
            self._keyless_by_age, now_ms - self._keyless_ms
        )

    def _closed(self, heap: list[tuple[int, str]], closed_before: int) -> list[str]:
        gone: list[str] = []
        while heap and heap[0][0] < closed_before:
            at_ms, run_id = heap[0]
            run = self._runs.get(run_id)
            if run is None or run.at_ms != at_ms:
                heapq.heappop(heap)  # left already, or re-added under another time
                continue
            if run.replica != self._replica_id and at_ms >= closed_before - self._takeover_ms:
                break  # its recorder still has time; everything after it is younger
            heapq.heappop(heap)
            gone.append(run_id)
        return gone

    def _add(self, run: FinishedRun) -> None:
        known = self._runs.get(run.run_id)
        self._runs[run.run_id] = run
        if known is None or known.at_ms != run.at_ms:
            heap = self._by_age if run.idempotency_key is not None else self._keyless_by_age
            heapq.heappush(heap, (run.at_ms, run.run_id))
        if run.idempotency_key is not None:
            index = (run.tenant, run.idempotency_key)
            owner = self._runs.get(self._by_key.get(index, ""))
            if owner is None or run.at_ms < owner.at_ms:
                self._by_key[index] = run.run_id
