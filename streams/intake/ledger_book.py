"""One replica's in-memory model of the run ledger: live entries, their counts, their order,
and which ledger offsets this replica knows the content of. Pure bookkeeping, no I/O
(streams.intake.state feeds it from the broker); thread-safe.

Finished runs leave the counts but stay in the book (streams.intake.finished_runs) until
their collapse window ends: a retry of their idempotency key still collapses into them, and
run status can say how they ended.

"Known" offsets are those read from the ledger plus this replica's own acknowledged
writes. When every offset below a reservation is known, nobody else can have written in
between, so the reservation can be decided without reading the ledger back first.
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from streams.intake.finished_runs import FINISHED, FinishedRun, FinishedRuns, RunOutcome
from streams.types import LANES, Lane

Phase = Literal["reserved", "queued", "delayed"]
#: What owns an idempotency key: a live entry or a finished run.
#: How long another replica waits before writing the end of a run it did not admit.
TAKEOVER_AFTER_S = 30.0
# A completion can be read before the admission it ends (different topics); remember it
# long enough for the admission to arrive, and no longer.
_EARLY_FINISH_KEEP = 50_000


class LedgerEntry(NamedTuple):
    """A NamedTuple, not a frozen dataclass: two are built per admitted run, and a tuple
    is about twice as cheap to build (a frozen dataclass sets each field through
    object.__setattr__)."""

    run_id: str
    tenant: str
    lane: Lane
    phase: Phase
    at_ms: int
    idempotency_key: str | None
    replica: str
    offset: int  # of the reservation (the entry's place in the total order); -1: not placed
    deadline_ms: int | None = None
    due_ms: int | None = None


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Queued runs (reservations included). The dicts are the caller's own copies."""

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
        if entry.phase == "delayed":
            self.delayed += sign
        self.by_lane[entry.lane] += sign
        left = self.by_tenant.get(entry.tenant, 0) + sign
        if left:
            self.by_tenant[entry.tenant] = left
        else:
            self.by_tenant.pop(entry.tenant, None)


class LedgerBook:
    def __init__(
        self,
        *,
        reservation_timeout_s: float = 30.0,
        replica_id: str = "",
        collapse_window_s: float = 86_400.0,
        takeover_after_s: float = TAKEOVER_AFTER_S,
    ) -> None:
        self.reservation_timeout_s = reservation_timeout_s
        self._reservation_timeout_ms = int(reservation_timeout_s * 1000)
        self._lock = threading.Lock()
        self._problem: str | None = None  # why decisions on this book would be untrue
        self._entries: dict[str, LedgerEntry] = {}
        self._totals = _Totals()
        self._undecided = _Totals()  # the reservations among them
        self._finished = FinishedRuns(
            replica_id,
            window_ms=int(collapse_window_s * 1000),
            takeover_after_ms=int(takeover_after_s * 1000),
        )
        # Entries in ledger order, to find the few at or after a reservation's offset;
        # items of entries that are gone are skipped and dropped from the left.
        self._order: deque[tuple[int, str]] = deque()
        self._unplaced: set[str] = set()  # one's own reservations not yet placed
        # Undecided reservations in arrival order (they may time out: oldest first).
        self._reserved: dict[str, None] = {}
        self._by_key: dict[tuple[str, str], set[str]] = {}
        # Per lane, (admitted at, run id) of admitted entries; items of runs that left or
        # changed are dropped when they reach the top (so the oldest costs no full scan).
        self._admitted_heaps: dict[Lane, list[tuple[int, str]]] = {lane: [] for lane in LANES}
        # Ends read before their admission: run id -> (outcome, reason, when learned).
        self._finished_early: OrderedDict[str, tuple[RunOutcome, str | None, int]] = OrderedDict()
        self._read_to = -1  # last ledger offset read
        self._known_to = -1  # every offset up to here is known (read, or written by us)
        self._own_ahead: set[int] = set()  # own acknowledged writes past _read_to

    # ------------------------------------------------------------ what the ledger says
    def skip_own(self, offset: int) -> bool:
        """Mark `offset` read; True when it holds one of our own writes, whose content the
        book already has (so the caller need not decode it)."""
        with self._lock:
            if offset <= self._read_to:
                # Read already: the client fetched it again (it may, after a broker restart).
                return True
            self._read_to = offset
            if offset > self._known_to:
                self._known_to = offset
                self._advance_known()
            if offset in self._own_ahead:
                self._own_ahead.discard(offset)
                return True
            if len(self._own_ahead) > 4096:  # writes never read back (cannot happen: hygiene)
                self._own_ahead = {o for o in self._own_ahead if o > offset}
            return False

    def needs_reading(self, offset: int) -> bool:
        """Whether the record at `offset` must be decoded: not read yet, nor one of our own
        writes (unlike skip_own, marks nothing read)."""
        with self._lock:
            return offset > self._read_to and offset not in self._own_ahead

    def apply(self, offset: int, run_id: str, data: dict[str, Any] | None) -> None:
        """Apply the ledger record at `offset` (after skip_own said it is not ours).
        `data` None is a tombstone: the run finished, or its reservation was rejected."""
        with self._lock:
            if data is None:
                self._drop(run_id)
                self._finished.forget(run_id)
                return
            if data["state"] == FINISHED:
                self._drop(run_id)
                self._finished.recorded(_finished_run(data))
                return
            if run_id in self._finished_early or self._finished.get(run_id) is not None:
                # It ended before this admission was read (different topics).
                early = self._finished_early.pop(run_id, None)
                if early is not None:
                    outcome, reason, at = early
                    run = _finished_from(_entry(data, offset), outcome, reason, at)
                    self._finished.learned(run, at, admitted_by=data["replica"])
                return
            known = self._entries.get(run_id)
            # The reservation fixes the entry's place in the order; later entries only
            # change its phase.
            place = known.offset if known is not None and known.offset >= 0 else offset
            self._put(_entry(data, place))
            self._unplaced.discard(run_id)
            if known is None or known.offset < 0:
                _insert_ordered(self._order, (place, run_id))

    def finish(
        self,
        run_id: str,
        outcome: RunOutcome = "completed",
        reason: str | None = None,
        *,
        now_ms: int = 0,
    ) -> None:
        """The run left the workflow (completed, dead-lettered or escalated), as read from
        a completion or dead-letter topic."""
        with self._lock:
            known = self._entries.get(run_id)
            if known is not None:
                # Also a reservation: only a run whose event was written can end, so an
                # undecided one (an unknown outcome) existed after all.
                self._drop(run_id)
                run = _finished_from(known, outcome, reason, now_ms)
                self._finished.learned(run, now_ms, admitted_by=known.replica)
                return
            if self._finished.get(run_id) is not None:
                return  # ended already
            self._finished_early[run_id] = (outcome, reason, now_ms)
            while len(self._finished_early) > _EARLY_FINISH_KEEP:
                self._finished_early.popitem(last=False)

    # ------------------------------------------------------------ one's own writes
    def note(self, entry: LedgerEntry) -> None:
        """Count one's own entry at once, before the broker has placed it."""
        with self._lock:
            known = self._entries.get(entry.run_id)
            if known is not None and known.offset >= 0:
                entry = entry._replace(offset=known.offset)
            if entry.run_id not in self._finished_early:
                self._put(entry)
                if entry.offset < 0:
                    self._unplaced.add(entry.run_id)

    def admit(self, entry: LedgerEntry) -> None:
        """One's own reservation was admitted: change its phase (and maybe lane). A run
        already gone (finished, or released) stays gone: a fast stage can finish a run
        before its admission is noted here."""
        with self._lock:
            if entry.run_id in self._entries:
                self._put(entry)
                early = self._finished_early.pop(entry.run_id, None)
                if early is not None:  # it ended before it was admitted here
                    self._drop(entry.run_id)
                    outcome, reason, at = early
                    run = _finished_from(entry, outcome, reason, at)
                    self._finished.learned(run, at, admitted_by=entry.replica)

    # ------------------------------------------------------------ finished runs
    def ends_to_record(self, now_ms: int) -> list[FinishedRun]:
        """Finished runs whose end this replica should write to the ledger now; each is
        counted as recorded (a write that fails is learned again after a restart)."""
        with self._lock:
            runs = self._finished.to_record(now_ms)
            for run in runs:
                self._finished.recorded(run)
            return runs

    def windows_closed(self, now_ms: int) -> list[str]:
        """Finished runs whose collapse window is over, for this replica to tombstone;
        they are forgotten here at once."""
        with self._lock:
            gone = self._finished.to_tombstone(now_ms)
            for run_id in gone:
                self._finished.forget(run_id)
            return gone

    def placed(self, offset: int, reservation_of: str | None = None) -> None:
        """The broker acknowledged one of our writes at `offset`; `reservation_of` names
        the run when that write was its reservation (which fixes the run's place)."""
        with self._lock:
            if offset > self._read_to:
                self._own_ahead.add(offset)
                if offset == self._known_to + 1:
                    self._advance_known()
            if reservation_of is None:
                return
            known = self._entries.get(reservation_of)
            if known is not None and known.offset < 0:
                self._entries[reservation_of] = known._replace(offset=offset)
                self._unplaced.discard(reservation_of)
                _insert_ordered(self._order, (offset, reservation_of))

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._drop(run_id)

    # ------------------------------------------------------------ questions
    def known_before(self, offset: int) -> bool:
        """True when every ledger offset below `offset` is known: what a reservation there
        is decided on is all in the book."""
        with self._lock:
            return self._known_to >= offset - 1

    def read_to(self) -> int:
        """The last ledger offset read."""
        with self._lock:
            return self._read_to

    def ledger_rewound(self, read_to: int, end_offset: int) -> None:
        """The ledger's end, read after read_to() said `read_to`, is `end_offset`: at or
        below what was read then means the ledger went back."""
        with self._lock:
            if end_offset <= read_to and self._problem is None:
                self._problem = (
                    f"the run ledger went back from offset {read_to} to {end_offset} "
                    "(the broker lost its data): this intake no longer knows what is queued; "
                    "restart it"
                )

    def cluster_changed(self, was: str, now: str) -> None:
        with self._lock:
            if self._problem is None:
                self._problem = (
                    f"the cluster id changed from {was} to {now} (the broker lost its data, "
                    "or this is another cluster): the run ledger this intake read is gone; "
                    "restart it"
                )

    def problem(self) -> str | None:
        """Why this book cannot be trusted for decisions any more, if it cannot."""
        with self._lock:
            return self._problem

    def read_past(self, offset: int) -> bool:
        with self._lock:
            return self._read_to >= offset

    def counts(self, *, before_offset: int | None = None, now_ms: int | None = None) -> QueueCounts:
        """Queued runs (reservations included). With before_offset, only entries earlier
        in the ledger: what a reservation at that offset is decided on. Costs the entries
        after that offset and one's unplaced reservations, not the whole ledger."""
        with self._lock:
            t = self._totals
            total, delayed = t.total, t.delayed
            by_tenant, by_lane = dict(t.by_tenant), dict(t.by_lane)
            excluded: dict[str, LedgerEntry] = {}
            if before_offset is not None:
                for run_id in self._unplaced:
                    excluded[run_id] = self._entries[run_id]
                for offset, run_id in reversed(self._order):
                    if offset < before_offset:
                        break
                    entry = self._entries.get(run_id)
                    if entry is not None and entry.offset == offset:
                        excluded[run_id] = entry
            if now_ms is not None:
                # A reservation its replica never decided (it died) stops holding capacity.
                # Oldest first; one still young ends the scan (a later arrival with an older
                # clock is counted a little longer, which can only under-admit).
                oldest_live = now_ms - self._reservation_timeout_ms
                for run_id in self._reserved:
                    entry = self._entries[run_id]
                    if entry.at_ms >= oldest_live:
                        break
                    excluded[run_id] = entry
        for entry in excluded.values():
            total -= 1
            if entry.phase == "delayed":
                delayed -= 1
            by_lane[entry.lane] -= 1
            left = by_tenant.get(entry.tenant, 0) - 1
            if left > 0:
                by_tenant[entry.tenant] = left
            else:
                by_tenant.pop(entry.tenant, None)
        return QueueCounts(total, delayed, by_tenant, by_lane)

    def oldest_admitted_ms(self) -> dict[Lane, int]:
        """Admission time of the oldest admitted, unfinished run per lane."""
        oldest: dict[Lane, int] = {}
        with self._lock:
            for lane, heap in self._admitted_heaps.items():
                while heap and not self._admitted_in(heap[0], lane):
                    heapq.heappop(heap)
                if heap:
                    oldest[lane] = heap[0][0]
        return oldest

    def first_with_key(
        self,
        tenant: str,
        key: str,
        since_ms: int,
        *,
        before_offset: int | None = None,
        other_than: str | None = None,
    ) -> LedgerEntry | FinishedRun | None:
        """What owns the tenant's idempotency key inside the window (submitted at or after
        since_ms): a finished run of the key, else the earliest placed live entry (before
        `before_offset`, when given). `other_than` leaves out the asker's own run: a
        produce retry can write one reservation twice, and a run never waits on itself."""
        with self._lock:
            finished = self._finished.owner_of(tenant, key, since_ms)
            if finished is not None and finished.run_id != other_than:
                return finished
            run_ids = self._by_key.get((tenant, key))
            matches = [self._entries[r] for r in run_ids] if run_ids else []
        ordered = [
            e for e in matches if e.offset >= 0 and e.at_ms >= since_ms and e.run_id != other_than
        ]
        if before_offset is not None:
            ordered = [e for e in ordered if e.offset < before_offset]
        return min(ordered, key=lambda e: e.offset) if ordered else None

    def entry(self, run_id: str) -> LedgerEntry | None:
        with self._lock:
            return self._entries.get(run_id)

    def run(self, run_id: str) -> LedgerEntry | FinishedRun | None:
        """The run's live entry, or how it finished (within its collapse window)."""
        with self._lock:
            return self._entries.get(run_id) or self._finished.get(run_id)

    def stale_reservations(self, before_ms: int) -> list[LedgerEntry]:
        """Undecided reservations made before `before_ms` (oldest first): their replica
        should have decided them long ago (it died, or its writes went unanswered)."""
        stale: list[LedgerEntry] = []
        with self._lock:
            for run_id in self._reserved:
                entry = self._entries[run_id]
                if entry.at_ms >= before_ms:
                    break
                stale.append(entry)
        return stale

    def undecided_by_tenant(self) -> dict[str, int]:
        """Reservations not yet decided, per tenant (counted in counts(), which must not
        overshoot; a report of admitted runs leaves them out)."""
        with self._lock:
            return dict(self._undecided.by_tenant)

    # ------------------------------------------------------------ with the lock held
    def _advance_known(self) -> None:
        ahead, known = self._own_ahead, self._known_to
        while known + 1 in ahead:
            known += 1
        self._known_to = known

    def _put(self, entry: LedgerEntry) -> None:
        """Insert or replace an entry, keeping the totals and indexes."""
        run_id = entry.run_id
        known = self._entries.get(run_id)
        if known is not None:
            self._totals.add(known, -1)
            if known.phase == "reserved":
                self._undecided.add(known, -1)
        self._entries[run_id] = entry
        self._totals.add(entry, +1)
        if entry.phase == "reserved":
            self._undecided.add(entry, +1)
        if entry.phase == "reserved":
            self._reserved.setdefault(run_id)
        else:
            self._reserved.pop(run_id, None)
            already_in_heap = (
                known is not None
                and known.phase != "reserved"
                and (known.lane, known.at_ms) == (entry.lane, entry.at_ms)
            )
            if not already_in_heap:
                self._push_admitted(entry)
        if entry.idempotency_key is not None and known is None:
            self._by_key.setdefault((entry.tenant, entry.idempotency_key), set()).add(run_id)

    def _admitted_in(self, item: tuple[int, str], lane: Lane) -> bool:
        entry = self._entries.get(item[1])
        return (
            entry is not None
            and entry.phase != "reserved"
            and entry.lane == lane
            and entry.at_ms == item[0]
        )

    def _push_admitted(self, entry: LedgerEntry) -> None:
        heap = self._admitted_heaps[entry.lane]
        heapq.heappush(heap, (entry.at_ms, entry.run_id))
        if len(heap) > 2 * len(self._entries) + 1024:  # many left below a long-lived top
            live = [item for item in heap if self._admitted_in(item, entry.lane)]
            heapq.heapify(live)
            self._admitted_heaps[entry.lane] = live

    def _drop(self, run_id: str) -> bool:
        """Remove an entry, keeping the totals and indexes."""
        known = self._entries.pop(run_id, None)
        if known is None:
            return False
        self._totals.add(known, -1)
        if known.phase == "reserved":
            self._undecided.add(known, -1)
        self._unplaced.discard(run_id)
        self._reserved.pop(run_id, None)
        if known.idempotency_key is not None:
            index_key = (known.tenant, known.idempotency_key)
            run_ids = self._by_key.get(index_key)
            if run_ids is not None:
                run_ids.discard(run_id)
                if not run_ids:
                    del self._by_key[index_key]
        order = self._order
        while order and order[0][1] not in self._entries:
            order.popleft()
        return True


def _insert_ordered(order: deque[tuple[int, str]], item: tuple[int, str]) -> None:
    """Keep `order` sorted by offset; reads and own placements arrive almost in order, so
    the place is found a step or two from the right."""
    if not order or order[-1][0] <= item[0]:
        order.append(item)
        return
    i = len(order) - 1
    while i > 0 and order[i - 1][0] > item[0]:
        i -= 1
    order.insert(i, item)


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
        deadline_ms=data.get("deadline"),
        due_ms=data.get("due_at"),
    )


def _finished_run(data: dict[str, Any]) -> FinishedRun:
    return FinishedRun(
        run_id=data["run_id"],
        tenant=data["tenant"],
        lane=data["lane"],
        at_ms=data["admitted_at"],
        idempotency_key=data["idempotency_key"],
        deadline_ms=data.get("deadline"),
        finished_ms=data.get("finished_at") or data["admitted_at"],
        outcome=data.get("outcome") or "completed",
        reason=data.get("reason"),
        replica=data["replica"],
    )


def _finished_from(
    entry: LedgerEntry, outcome: RunOutcome, reason: str | None, finished_ms: int
) -> FinishedRun:
    return FinishedRun(
        entry.run_id, entry.tenant, entry.lane, entry.at_ms, entry.idempotency_key,
        entry.deadline_ms, finished_ms, outcome, reason, entry.replica,
    )  # fmt: skip
