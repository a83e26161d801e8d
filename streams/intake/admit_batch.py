"""The ledger steps of admission, for a batch of submissions: reserve a place for each in
the run ledger, make sure every entry before those places is known, decide each from
exactly the entries before it (in ledger order), then publish each admitted run's event
and ledger entry together. Owns that order and the answers; the rules are
streams.policy.admission's.

A submission hears "accepted" once the broker has acknowledged its event (its ledger
entry, if unacknowledged, is written again). One whose event was sent but not acknowledged
hears OutcomeUnknown, with the run id it has if it exists: its reservation is kept, and
streams.intake.resolver later reads back whether the event was written. A failure before
anything of the run was sent releases its reservation (a tombstone) and the caller hears
the failure: never a false accept, never a false refusal.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable

from streams.errors import BrokerUnavailable, OutcomeUnknown
from streams.intake.finished_runs import FinishedRun
from streams.intake.group_commit import Submission
from streams.intake.ledger_book import LedgerBook, LedgerEntry, QueueCounts
from streams.intake.requests import Decision, RunRequest, collapsed_into, decision_of
from streams.intake.writer import IntakeWriter, Tally
from streams.policy.admission import AdmissionDecision
from streams.types import Lane

#: The policy's verdict for one request on the given counts at now_ms.
Judge = Callable[[RunRequest, QueueCounts, int], AdmissionDecision]
#: Returns once the book knows every ledger offset below the given one (else raises).
WaitKnown = Callable[[int], Awaitable[None]]
#: Takes a reservation whose run's outcome is unknown, to be settled later.
OnUnknown = Callable[[LedgerEntry], None]


class BatchAdmitter:
    def __init__(
        self,
        book: LedgerBook,
        writer: IntakeWriter,
        judge: Judge,
        wait_known: WaitKnown,
        on_unknown: OnUnknown,
        *,
        replica_id: str,
        dedupe_window_s: float,
        ack_timeout_s: float,
        unknown_retry_after_s: float,
    ) -> None:
        self._book = book
        self._writer = writer
        self._judge = judge
        self._wait_known = wait_known
        self._on_unknown = on_unknown
        self._unknown_retry_after_s = unknown_retry_after_s
        self._replica_id = replica_id
        self._dedupe_window_ms = int(dedupe_window_s * 1000)
        self._ack_timeout_s = ack_timeout_s
        self._side_tasks: set[asyncio.Task[None]] = set()  # strong references until done
        # Run ids: 128 random bits, like uuid4().hex, from a generator of our own seeded by
        # the OS. Not os.urandom per id: that syscall releases the GIL, and under load the
        # I/O thread then holds it for a while (one hand-over per id).
        self._ids = random.Random(os.urandom(32))

    async def run(self, batch: list[Submission]) -> None:
        """Admit or refuse every submission of `batch`; each caller hears through its
        submission's answer. Called by GroupCommit on the callers' event loop."""
        loop = asyncio.get_running_loop()
        mine = batch
        try:
            placed = await self._reserve(batch, loop)
            if not placed:
                return
            last = placed[-1].offset
            # Only when someone else may have written between what was read and the last
            # reservation must the ledger be read back that far.
            if not self._book.known_before(last):
                await self._wait_known(last)
            admitted, deferred = self._decide(placed)
            if deferred:
                waiting = set(deferred)
                mine = [s for s in batch if s not in waiting]
                for submission in deferred:
                    self._spawn(self._after_earlier_owner(submission))
            await self._publish(admitted, loop)
        except BaseException as exc:
            for submission in mine:
                self._give_up(submission, exc)
            if not isinstance(exc, Exception):
                raise

    # ------------------------------------------------------------------ steps
    async def _reserve(
        self, batch: list[Submission], loop: asyncio.AbstractEventLoop
    ) -> list[Submission]:
        """Append a reservation for each; return the placed ones in ledger order."""
        tally = Tally(loop, len(batch), len(batch))
        for index, sub in enumerate(batch):
            request = sub.request
            sub.run_id = f"{self._ids.getrandbits(128):032x}"
            entry = LedgerEntry(
                sub.run_id, request.tenant, request.lane, "reserved", sub.now_ms,
                request.idempotency_key, self._replica_id, -1, request.deadline_ms,
            )  # fmt: skip
            self._book.note(entry)
            self._writer.append(entry, request.deadline_ms, None, tally, index, loop)
        await tally.wait(self._ack_timeout_s)
        placed: list[Submission] = []
        for index, sub in enumerate(batch):
            if tally.acked[index]:
                # The book's place, not the acknowledged offset: a produce retry may have
                # written the reservation twice, and the first copy is the one in order.
                known = self._book.entry(sub.run_id)
                placed_at = tally.offsets[index]
                sub.offset = (
                    min(placed_at, known.offset) if known and known.offset >= 0 else placed_at
                )
                placed.append(sub)
            else:
                self._give_up(sub, tally.errors[index] or self._late("ledger entry"))
        placed.sort(key=_offset)
        return placed

    def _decide(self, placed: list[Submission]) -> tuple[list[Submission], list[Submission]]:
        """Decide each in ledger order, each from the entries before it: the book's counts
        before the first, then carried forward while the places are adjacent (nobody
        else's entry in between). Returns (admitted, waiting for an earlier duplicate)."""
        admitted: list[Submission] = []
        deferred: list[Submission] = []
        running: _Running | None = None
        previous = -2
        for sub in placed:
            request = sub.request
            if running is None or sub.offset != previous + 1:
                running = _Running(self._book.counts(before_offset=sub.offset, now_ms=sub.now_ms))
            previous = sub.offset
            if sub.answer.done():  # its caller stopped waiting: admit nothing for nobody
                self._give_up(sub, None)
                continue
            key = request.idempotency_key
            if key is not None:
                since_ms = sub.now_ms - self._dedupe_window_ms
                owner = self._book.first_with_key(
                    request.tenant, key, since_ms, before_offset=sub.offset, other_than=sub.run_id
                )
                if owner is not None and owner.phase == "reserved":
                    # An earlier reservation of the key, still undecided: it may yet be
                    # refused, so this one waits for it (and counts meanwhile).
                    deferred.append(sub)
                    running.add(request.tenant, request.lane)
                    continue
                if owner is not None:
                    self._writer.release(sub.run_id)
                    self._answer(sub, collapsed(owner, request.lane))
                    continue
            verdict = self._judge(request, running.counts(), sub.now_ms)
            if verdict.outcome == "rejected":
                self._writer.release(sub.run_id)
                self._answer(sub, decision_of(verdict, request.lane))
                continue
            running.add(request.tenant, request.lane)
            sub.verdict = verdict
            admitted.append(sub)
        return admitted, deferred

    async def _publish(self, admitted: list[Submission], loop: asyncio.AbstractEventLoop) -> None:
        """Publish each run's event and its admitted ledger entry at once; answer each when
        both are acknowledged."""
        if not admitted:
            return
        # Two slots per submission: 2i its event, 2i + 1 its ledger entry.
        tally = Tally(loop, 2 * len(admitted), 2 * len(admitted))
        for index, sub in enumerate(admitted):
            request, verdict = sub.request, sub.verdict
            assert verdict is not None  # set by _decide for every admitted submission
            delayed = verdict.outcome == "delayed"
            if delayed:
                sub.due_ms = sub.now_ms + int((verdict.delay_s or 0.0) * 1000)
            sub.admitted = LedgerEntry(
                sub.run_id, request.tenant, verdict.lane, "delayed" if delayed else "queued",
                sub.now_ms, request.idempotency_key, self._replica_id, sub.offset,
                request.deadline_ms, sub.due_ms,
            )  # fmt: skip
            self._writer.publish(
                sub.run_id, request.tenant, verdict.lane, request.payload, sub.now_ms,
                priority=request.priority, idempotency_key=request.idempotency_key,
                deadline_ms=request.deadline_ms, trace_context=request.trace_context,
                due_ms=sub.due_ms, tally=tally, index=2 * index, loop=loop,
            )  # fmt: skip
            sub.sent = not tally.unsent[2 * index]
            self._writer.append(
                sub.admitted, request.deadline_ms, sub.due_ms, tally, 2 * index + 1, loop
            )
        await tally.wait(self._ack_timeout_s)
        for index, sub in enumerate(admitted):
            event, entry = 2 * index, 2 * index + 1
            if tally.acked[event] and sub.admitted is not None and sub.verdict is not None:
                # The run exists: its event is on the first stage (or the delayed topic).
                self._book.admit(sub.admitted)
                if not tally.acked[entry]:
                    self._writer.rewrite(sub.admitted)
                decision = decision_of(
                    sub.verdict, sub.request.lane, run_id=sub.run_id, due_at_ms=sub.due_ms
                )
                self._answer(sub, decision)
            elif tally.unsent[event]:  # never left this process: nothing of the run exists
                self._give_up(sub, tally.errors[event] or self._late("publish"))
            else:
                self._unknown(sub, tally.errors[event])

    async def _after_earlier_owner(self, sub: Submission) -> None:
        """Decide a submission once the earlier reservation of its key is decided."""
        loop = asyncio.get_running_loop()
        try:
            deadline = time.monotonic() + self._ack_timeout_s
            while True:
                await self._earlier_owner_decided(sub, deadline)
                admitted, deferred = self._decide([sub])
                if not deferred:
                    break
            await self._publish(admitted, loop)
        except BaseException as exc:
            self._give_up(sub, exc)
            if not isinstance(exc, Exception):
                raise

    async def _earlier_owner_decided(self, sub: Submission, deadline: float) -> None:
        request = sub.request
        assert request.idempotency_key is not None  # only keyed submissions are deferred
        since_ms = sub.now_ms - self._dedupe_window_ms
        while True:
            owner = self._book.first_with_key(
                request.tenant, request.idempotency_key, since_ms, before_offset=sub.offset
            )
            if owner is None or owner.phase != "reserved":
                return
            if time.monotonic() >= deadline:
                raise OutcomeUnknown(
                    "an earlier submission with this idempotency key is still undecided (its "
                    "writes were not acknowledged); retry with the same key to learn its outcome",
                    run_id=owner.run_id,
                    retry_after_s=self._unknown_retry_after_s,
                )
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ answers
    def _answer(self, sub: Submission, decision: Decision) -> None:
        sub.finished = True
        if not sub.answer.done():
            sub.answer.set_result(decision)

    def _unknown(self, sub: Submission, error: BaseException | None) -> None:
        """The run's event was sent and not acknowledged: it may exist. Keep its
        reservation (counted, and owning its key) for the resolver, and say so."""
        sub.finished = True
        reservation = self._book.entry(sub.run_id)
        if reservation is not None:
            self._on_unknown(reservation)
        if sub.answer.done():
            return
        why = f": {error}" if error is not None else ""
        sub.answer.set_exception(
            OutcomeUnknown(
                f"the broker did not acknowledge the run within {self._ack_timeout_s:.0f} s"
                f"{why}; it may have been accepted: retry with the same idempotency key",
                run_id=sub.run_id,
                retry_after_s=self._unknown_retry_after_s,
            )
        )

    def _give_up(self, sub: Submission, error: BaseException | None) -> None:
        """Release the submission's reservation, if any, and tell its caller why (None:
        nobody is listening any more)."""
        if sub.finished:
            return
        if sub.sent:  # its event may be out there: not ours to refuse any more
            self._unknown(sub, error)
            return
        sub.finished = True
        if sub.run_id:
            self._writer.release(sub.run_id)
        if sub.answer.done():
            return
        if isinstance(error, Exception):
            sub.answer.set_exception(error)
        else:
            sub.answer.cancel()

    def _late(self, what: str) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"the broker did not acknowledge the {what} within {self._ack_timeout_s:.0f} s"
        )

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)


class _Running:
    """Counts carried from one reservation to the next within a batch."""

    __slots__ = ("by_lane", "by_tenant", "delayed", "total")

    def __init__(self, counts: QueueCounts) -> None:
        self.total, self.delayed = counts.total, counts.delayed
        self.by_tenant, self.by_lane = counts.by_tenant, counts.by_lane  # the caller's copies

    def add(self, tenant: str, lane: Lane) -> None:
        """One more live reservation (counted in the lane asked for, as the book does)."""
        self.total += 1
        self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + 1
        self.by_lane[lane] += 1

    def counts(self) -> QueueCounts:
        return QueueCounts(self.total, self.delayed, self.by_tenant, self.by_lane)


def _offset(sub: Submission) -> int:
    return sub.offset


def collapsed(owner: LedgerEntry | FinishedRun, requested_lane: Lane) -> Decision:
    """A duplicate's answer, with the state of the run it collapses into."""
    state = owner.outcome if isinstance(owner, FinishedRun) else owner.phase
    return collapsed_into(owner.run_id, owner.lane, requested_lane, state)
