"""The review handler without a broker (a fake book): a run decided while no worker ran
continues at once with the decision in its headers; a redelivered record past its original
deadline gets on_timeout at once; escalate raises Escalate; a replayed record is parked
anew; a decision arriving while parked completes the call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from streams.events import TaskEventCodec, new_task_event
from streams.review.records import ReviewEntry
from streams.review.stage import ReviewHandler
from streams.runtime.context import HandlerContext
from streams.runtime.emitter import Emitter
from streams.signals import Escalate
from streams.topology import Topology, parse_topology
from streams.types import Record


class FakeBook:
    def __init__(self) -> None:
        self.entries: dict[str, ReviewEntry] = {}
        self.written: list[ReviewEntry] = []
        self.listeners: list[Any] = []

    def listen(self, listener: Any) -> None:
        self.listeners.append(listener)

    def get(self, run_id: str) -> ReviewEntry | None:
        return self.entries.get(run_id)

    def write(self, entry: ReviewEntry) -> None:
        self.written.append(entry)
        self.entries[entry.run_id] = entry

    def arrive(self, entry: ReviewEntry) -> None:  # as read from W.reviews
        self.entries[entry.run_id] = entry
        for listener in self.listeners:
            listener(entry)


def _topology(on_timeout: str, max_wait_s: float = 30.0) -> Topology:
    return parse_topology(
        {
            "workflow": "w",
            "lanes": ["standard"],
            "stages": {
                "approve": {
                    "kind": "review",
                    "review": {"max_wait_s": max_wait_s, "on_timeout": on_timeout},
                    "downstream": ["send"],
                },
                "send": {"handler": "tests.integration.handlers:noop"},
            },
        },
        "<test>",
    )


def _call(topology: Topology, book: FakeBook, entry_for: Any = None) -> tuple[Any, ...]:
    now_ms = int(time.time() * 1000)
    event = new_task_event(
        workflow="w", stage="approve", tenant="t", lane="standard", payload=b"{}", now_ms=now_ms
    )
    record = Record("w.approve.standard", 0, 7, event.run_id.encode(), b"", now_ms)
    emitter = Emitter(topology, topology.stages["approve"], TaskEventCodec(), lambda: now_ms)
    ctx = HandlerContext("approve", "standard", record, None, now_ms, emitter)
    if entry_for is not None:
        book.entries[event.run_id] = entry_for(event, record)
    handler = ReviewHandler(topology, "approve", book)  # type: ignore[arg-type]
    return handler, event, ctx


def _entry(event: Any, record: Record, **kw: Any) -> ReviewEntry:
    base: dict[str, Any] = {
        "workflow": "w", "stage": "approve", "run_id": event.run_id, "state": "pending",
        "tenant": "t", "lane": "standard", "admitted_at_ms": 1_000, "deadline_ms": 2_000,
        "payload": b"{}", "record_topic": record.topic, "record_partition": record.partition,
        "record_offset": record.offset,
    }  # fmt: skip
    return ReviewEntry(**{**base, **kw})


def _headers(ctx: HandlerContext) -> dict[str, bytes]:
    [emit] = ctx.emits
    return dict(emit.headers)


def test_a_run_decided_while_no_worker_ran_continues_at_once() -> None:
    book = FakeBook()
    handler, event, ctx = _call(
        _topology("decline"),
        book,
        lambda e, r: _entry(e, r, state="approved", decision="approve", reviewer="ana",
                            note="ok", decided_at_ms=1_500, deadline_ms=10**15),
    )  # fmt: skip
    asyncio.run(asyncio.wait_for(handler(event, ctx), 2))
    headers = _headers(ctx)
    assert headers["streams.review.decision"] == b"approve"
    assert headers["streams.review.by"] == b"ana" and headers["streams.review.note"] == b"ok"
    assert book.written == []  # nothing parked again


def test_a_redelivered_record_past_its_original_deadline_gets_on_timeout_at_once() -> None:
    book = FakeBook()
    handler, event, ctx = _call(_topology("approve", max_wait_s=3600), book, _entry)
    asyncio.run(asyncio.wait_for(handler(event, ctx), 2))  # its deadline (2 s epoch) passed
    assert _headers(ctx)["streams.review.decision"] == b"approve"
    assert _headers(ctx)["streams.review.by"] == b"timeout"
    [timed_out] = book.written
    assert timed_out.state == "timed_out" and timed_out.admitted_at_ms == 1_000


def test_on_timeout_escalate_raises_escalate() -> None:
    handler, event, ctx = _call(_topology("escalate"), FakeBook(), _entry)
    with pytest.raises(Escalate):
        asyncio.run(asyncio.wait_for(handler(event, ctx), 2))
    assert ctx.emits == []


def test_a_replayed_record_is_parked_anew_and_a_decision_completes_it() -> None:
    book = FakeBook()
    handler, event, ctx = _call(
        _topology("decline"),
        book,
        lambda e, r: _entry(e, r, state="timed_out", record_offset=3),  # an older record
    )

    async def scenario() -> None:
        call = asyncio.ensure_future(handler(event, ctx))
        while not book.written:
            await asyncio.sleep(0.01)
        [parked] = book.written
        assert parked.state == "pending" and parked.record_offset == 7
        assert handler.pending == 1
        decided = parked.decided("declined", "decline", at_ms=5, note="no", reviewer="bo")
        await asyncio.to_thread(book.arrive, decided)  # read on the book's own thread
        await asyncio.wait_for(call, 2)

    asyncio.run(scenario())
    assert _headers(ctx)["streams.review.decision"] == b"decline"
    assert handler.pending == 0
