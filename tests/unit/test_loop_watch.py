"""LoopWatch: a loop that stops turning is logged once, with the stack that holds it, and
again when it turns; an async handler blocking the handlers' event loop is named."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

import pytest

from streams.events import TaskEvent, new_task_event
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import HandlerRunner, Job
from streams.runtime.loop_watch import LoopWatch
from streams.types import Record


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "streams.runtime.loop_watch" and text in r.getMessage()
    ]


def test_a_stuck_loop_is_logged_once_with_its_stack_and_again_when_it_turns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    release = threading.Event()

    def waiting_on_the_broker() -> None:
        release.wait(10)

    thread = threading.Thread(target=waiting_on_the_broker, daemon=True)
    thread.start()
    assert thread.ident is not None
    watch = LoopWatch()
    beat = watch.watch("stage s worker w: the poll loop", thread.ident, after_s=2.0)
    try:
        now = time.monotonic()
        beat.last = now - 1.0
        watch.look(now)
        assert not _warnings(caplog, "has not turned")
        beat.last = now - 2.5
        watch.look(now)
        watch.look(now + 0.5)
        [stalled] = _warnings(caplog, "has not turned")
        assert stalled.startswith("stage s worker w: the poll loop has not turned for 2.5 s")
        assert "waiting_on_the_broker" in stalled and "release.wait(10)" in stalled
        beat.last = now + 0.6
        watch.look(now + 0.7)
        [turned] = _warnings(caplog, "turned again")
        assert turned == "stage s worker w: the poll loop turned again after 3.1 s stuck"
    finally:
        watch.unwatch(beat)
        release.set()


def test_an_async_handler_blocking_the_event_loop_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)

    async def calls_a_blocking_client(event: TaskEvent, ctx: HandlerContext) -> None:
        time.sleep(1.5)  # a sync call inside async def: the loop cannot turn

    runner: HandlerRunner[int] = HandlerRunner(calls_a_blocking_client)
    watch = LoopWatch(every_s=0.05)
    beat = runner.watch_loop(watch, "stage s worker w: the handlers' event loop", 0.6)
    assert beat is not None
    try:
        record = Record("w.s.standard", 0, 0, b"k", b"v", 0, ())
        ctx = HandlerContext("s", "standard", record, None, 0, cast(Any, None))
        event = new_task_event(
            workflow="w", stage="s", tenant="t", lane="standard", payload=b"{}", now_ms=1
        )
        runner.submit([Job(0, event, ctx, 30.0)])
        deadline = time.monotonic() + 5
        while not _warnings(caplog, "turned again") and time.monotonic() < deadline:
            time.sleep(0.05)
        [stalled] = _warnings(caplog, "has not turned")
        assert "calls_a_blocking_client" in stalled and "time.sleep(1.5)" in stalled
        assert _warnings(caplog, "turned again")
    finally:
        watch.unwatch(beat)
        runner.close()
