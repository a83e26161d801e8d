"""A review stage's worker: a StageWorker whose handler is a person.

Owns parking a run as a pending review (a W.reviews entry; the record stays in flight, so
it counts against the stage's concurrency, which is max_pending, and the worker stops
fetching while it is full) and completing it when a decision arrives or its deadline
passes. Must not serve HTTP (streams.review.http) nor decide the queue's rules
(streams.policy.review).

A person is a slow dependency: each pending review is one awaiting handler call. On a
restart the redelivered records find their entries in W.reviews and keep their original
deadlines; a run decided while no worker ran continues at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.policy.review import ReviewConfig
from streams.review.book import ReviewBook
from streams.review.metrics import ReviewMetrics
from streams.review.records import TIMEOUT_REVIEWER, ReviewEntry, decision_headers
from streams.review.sweeper import ReviewSweeper
from streams.runtime.context import HandlerContext
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.signals import DeadLetter, Escalate
from streams.topology import Topology
from streams.types import Record, TopicPartition

__all__ = ["ReviewHandler", "ReviewWorker", "review_worker"]

#: A review worker's shutdown grace and revoke budget at most (its in-flight calls are
#: parked reviews, safe in W.reviews).
_REVIEW_LET_GO_S = 2.0
#: How often a parked review checks that its partition is still this worker's.
_OWNER_CHECK_S = 1.0


class ReviewHandler:
    """The handler of review stage `stage`: parks each run until it is decided."""

    def __init__(self, topology: Topology, stage: str, book: ReviewBook) -> None:
        review = topology.stages[stage].review
        if review is None:
            raise ValueError(f"stage {stage!r} is not a review stage (kind: review)")
        self.config: ReviewConfig = review
        self.stage = stage
        self._book = book
        # Runs waiting here, each with its loop and future (resolved from the book's thread).
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[ReviewEntry]]]
        self._waiting = {}
        self._pending: set[str] = set()  # runs this worker holds parked (its share of the queue)
        self.metrics: ReviewMetrics | None = None  # set by ReviewWorker once it has a registry
        #: Whether this worker still holds a partition (ReviewWorker sets it).
        self.owns: Callable[[TopicPartition], bool] = lambda tp: True
        book.listen(self._on_entry)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def __call__(self, event: TaskEvent, ctx: HandlerContext) -> None:
        self._pending.add(event.run_id)
        try:
            entry = self._book.get(event.run_id)
            if entry is None or entry.stage != self.stage or not entry.holds(ctx.record):
                entry = await self._park(event, ctx.record)
            if entry.state == "pending":
                entry = await self._wait(entry, ctx.record.tp)
        finally:
            self._pending.discard(event.run_id)
        by_person = entry.state != "timed_out"
        if not by_person and self.config.on_timeout == "escalate":
            self._count("escalate", by_person=False)
            raise Escalate(f"review not decided within {self.config.max_wait_s:g} s")
        _emit_decided(ctx, event, entry)
        self._count(entry.decision or "", by_person=by_person)

    def _count(self, outcome: str, *, by_person: bool) -> None:
        if self.metrics is not None:
            self.metrics.decided(outcome, by_person=by_person)

    async def _park(self, event: TaskEvent, record: Record) -> ReviewEntry:
        now_ms = _now_ms()
        entry = ReviewEntry(
            workflow=event.workflow,
            stage=self.stage,
            run_id=event.run_id,
            state="pending",
            tenant=event.tenant,
            lane=event.lane,
            admitted_at_ms=now_ms,
            deadline_ms=now_ms + int(self.config.max_wait_s * 1000),
            payload=event.payload,
            record_topic=record.topic,
            record_partition=record.partition,
            record_offset=record.offset,
        )
        await asyncio.to_thread(self._book.write, entry)
        return entry

    async def _wait(self, entry: ReviewEntry, tp: TopicPartition) -> ReviewEntry:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ReviewEntry] = loop.create_future()
        self._waiting[entry.run_id] = (loop, future)
        try:
            # A decision that landed between reading the book and registering the waiter.
            latest = self._book.get(entry.run_id)
            if latest is not None and latest.state != "pending":
                return latest
            try:
                return await self._decision(future, entry.deadline_ms, tp)
            except TimeoutError:
                outcome = self.config.on_timeout
                timed_out = entry.decided(
                    "timed_out",
                    "decline" if outcome == "escalate" else outcome,
                    at_ms=_now_ms(),
                    note=f"not decided within {self.config.max_wait_s:g} s: {outcome}",
                    reviewer=TIMEOUT_REVIEWER,
                )
                await asyncio.to_thread(self._book.write, timed_out)
                return timed_out
        finally:
            self._waiting.pop(entry.run_id, None)

    async def _decision(
        self, future: asyncio.Future[ReviewEntry], deadline_ms: int, tp: TopicPartition
    ) -> ReviewEntry:
        """The decided entry; TimeoutError at the deadline. A review whose partition this
        worker no longer holds (a rebalance moved it: the new owner parks it again, with
        its deadline) is let go, so it does not keep a place here; its outcome is dropped
        by the worker. Twice unowned, a second apart: a sample taken mid-rebalance may miss
        a partition, and letting go of one still held would dead-letter it."""
        unowned = 0
        while True:
            left_s = (deadline_ms - _now_ms()) / 1000
            if left_s <= 0:
                raise TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(left_s, _OWNER_CHECK_S))
            except TimeoutError:
                pass
            unowned = unowned + 1 if not self.owns(tp) else 0
            if unowned >= 2:
                raise ReviewLetGo(f"{tp} moved to another worker; it holds this review now")

    def _on_entry(self, entry: ReviewEntry) -> None:
        if entry.state == "pending" or entry.stage != self.stage:
            return
        waiting = self._waiting.get(entry.run_id)
        if waiting is not None:
            loop, future = waiting
            loop.call_soon_threadsafe(_resolve, future, entry)


class ReviewLetGo(DeadLetter):
    """A parked review's partition moved to another worker. Never an outcome: the worker
    drops what a call on a partition it no longer holds returns or raises. A DeadLetter
    so that, were the partition still held after all, the run is a visible dead letter,
    never retried, rather than silently ended."""


class ReviewWorker(StageWorker):
    """A StageWorker running a review stage; its review book lives as long as it runs, and
    its sweeper tombstones the reviews of runs that moved on (streams.review.sweeper)."""

    def __init__(self, topology: Topology, stage: str, client: ClientConfig, **kwargs: Any) -> None:
        options: WorkerOptions = kwargs.pop("options", None) or WorkerOptions()
        # Parked reviews are kept in W.reviews and redelivered: stopping, or giving up a
        # partition in a rebalance, need not wait for people, only for runs already decided
        # to be handed on.
        options = dataclasses.replace(
            options,
            shutdown_grace_s=min(options.shutdown_grace_s, _REVIEW_LET_GO_S),
            revoke_budget_s=min(options.revoke_budget_s, _REVIEW_LET_GO_S),
        )
        self.book = ReviewBook(topology, client).start()
        try:
            handler = ReviewHandler(topology, stage, self.book)
            super().__init__(topology, stage, client, handler=handler, options=options, **kwargs)
            handler.owns = lambda tp: tp in self.partitions()
            handler.metrics = ReviewMetrics(
                self.registry,
                workflow=topology.workflow,
                stage=stage,
                max_pending=handler.config.max_pending,
                pending=lambda: handler.pending,
                oldest_age_s=lambda now: self.book.oldest_age_s(stage, now=now),
                clear_rate_per_s=lambda now: self.book.clear_rate_per_s(stage, now=now),
            )
        except BaseException:
            self.book.close()
            raise
        self._admin = Admin(client, timeout_s=5.0)
        group = self.stage.consumer_group
        self.sweeper = ReviewSweeper(
            self.book,
            stage,
            lambda parts: self._admin.committed_offsets(group, parts),
            keep_decided_s=handler.config.rate_window_s,
        )

    def run(self) -> None:
        self.sweeper.start()
        try:
            super().run()
        finally:
            self.sweeper.stop()
            self._admin.close()
            self.book.close()


def review_worker(
    topology: Topology, stage: str, client: ClientConfig, **kwargs: Any
) -> ReviewWorker:
    """The worker of review stage `stage` (StageWorker's keyword arguments, but handler)."""
    return ReviewWorker(topology, stage, client, **kwargs)


def _emit_decided(ctx: HandlerContext, event: TaskEvent, entry: ReviewEntry) -> None:
    """Hand the run downstream with the decision in its record's headers."""
    first = len(ctx.emits)
    ctx.emit(event)
    headers = decision_headers(entry)
    for i in range(first, len(ctx.emits)):
        emit = ctx.emits[i]
        ctx.emits[i] = emit._replace(headers=(*emit.headers, *headers))


def _resolve(future: asyncio.Future[ReviewEntry], entry: ReviewEntry) -> None:
    if not future.done():
        future.set_result(entry)


def _now_ms() -> int:
    return int(time.time() * 1000)
