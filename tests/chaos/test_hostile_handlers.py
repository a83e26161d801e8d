"""Hostile handlers against the real broker (invariant 10): whatever a handler does, the
worker keeps running and every record ends in its stated outcome.

One stream mixes every behaviour, chosen by the record's payload, for an async handler and
for a plain function; a second test hangs every handler thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from streams import DeadLetter, Escalate, Retry, StageWorker, WorkerOptions
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import WorkerThread, publish, read_dead_letters, read_events
from tests.integration.workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: payload -> the dead-letter reason it must end with (None: it must come out).
EXPECTED: dict[bytes, str | None] = {
    b"ok": None,
    b"raise": "handler_error",
    b"exit": "handler_error",
    b"interrupt": "handler_error",
    b"hang": "timeout",
    b"unencodable": "emit_error",
    b"swallowed-emit": "emit_error",
    b"signal-dead-letter": "dead_letter",
    b"signal-retry": "retry_requested",
    b"signal-escalate": "escalated",
}


def _mixed_stream(topology: Any, seed: int) -> tuple[list[Any], list[bytes]]:
    """300 records: 30 % raising, the rest spread over the other behaviours."""
    rng = random.Random(seed)
    kinds = [b"raise"] * 90 + [b"ok"] * 120
    others = [k for k in EXPECTED if k not in (b"raise", b"ok")]
    kinds += [others[i % len(others)] for i in range(90)]
    rng.shuffle(kinds)
    sent = []
    for kind in kinds:
        sent.extend(events(topology, "plan", 1, payload=kind))
    return sent, kinds


def _outcome(kind: bytes, event: Any, ctx: Any) -> None:
    """What every variant does after its own way of misbehaving."""
    if kind == b"raise":
        raise ValueError("the CRM said no")
    if kind == b"exit":
        raise SystemExit(3)
    if kind == b"interrupt":
        raise KeyboardInterrupt
    if kind == b"unencodable":
        ctx.emit(dataclasses.replace(event, priority=2**40))
    if kind == b"swallowed-emit":
        try:
            ctx.emit(dataclasses.replace(event, priority=-(2**40)))
        except Exception:
            return  # hides the failure: the record still ends as emit_error
    if kind == b"signal-dead-letter":
        raise DeadLetter("ticket closed")
    if kind == b"signal-retry":
        raise Retry(after_s=5, reason="rate limited")
    if kind == b"signal-escalate":
        raise Escalate("refund above limit")
    ctx.emit(event)


class AsyncCallable:
    """A handler object with `async def __call__` (it used to run as a plain function: the
    coroutine was never awaited and the record silently committed)."""

    def __init__(self) -> None:
        self.cancels_seen = 0

    async def __call__(self, event: Any, ctx: Any) -> None:
        kind = event.payload
        if kind == b"hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancels_seen += 1
                raise
        if kind == b"self-cancel":
            raise asyncio.CancelledError  # its own, not the runner's timeout
        await asyncio.sleep(0)
        _outcome(kind, event, ctx)


def _plain(release: threading.Event) -> Any:
    def handler(event: Any, ctx: Any) -> None:
        if event.payload == b"hang":
            release.wait(3600)  # a thread cannot be cancelled: it hangs past its timeout
        _outcome(event.payload, event, ctx)

    return handler


def _check(
    client_config: ClientConfig,
    topology: Any,
    sent: list[Any],
    kinds: list[bytes],
    expected: dict[bytes, str | None],
) -> None:
    want_out = [e.run_id for e, k in zip(sent, kinds, strict=True) if expected[k] is None]
    want_dead = Counter(expected[k] for k in kinds if expected[k] is not None)
    out = read_events(
        client_config, topology.completed_topic, 3, expect=len(want_out), timeout_s=90
    )
    dead = read_dead_letters(
        client_config, topology.dead_letter_topic, 3, expect=sum(want_dead.values()), timeout_s=90
    )
    assert sorted(e.run_id for e in out) == sorted(want_out)
    assert Counter(d.reason for d in dead) == want_dead
    signalled = {d.error_message for d in dead if d.reason in _SIGNALLED}
    assert signalled == {"ticket closed", "rate limited", "refund above limit"}


_SIGNALLED = ("dead_letter", "retry_requested", "escalated")


@pytest.mark.parametrize("variant", ["async_callable", "plain_function"])
def test_every_hostile_record_ends_in_its_stated_outcome_and_the_worker_keeps_running(
    admin: Admin, client_config: ClientConfig, variant: str
) -> None:
    topology = make_workflow(
        admin,
        {
            "plan": {
                "handler_timeout_s": 1.0,
                "concurrency": 64,
                # 30 % failures are a warning, not a reason to stop the worker.
                "dead_letter_limit": {"max_ratio": 0.9, "max_consecutive": None},
            }
        },
    )
    release = threading.Event()
    sent, kinds = _mixed_stream(topology, seed=20261201)
    expected = dict(EXPECTED)
    handler: Any
    if variant == "async_callable":
        handler = AsyncCallable()
        extra = events(topology, "plan", 10, payload=b"self-cancel")
        sent, kinds = sent + extra, kinds + [b"self-cancel"] * len(extra)
        expected[b"self-cancel"] = "handler_error"
    else:
        handler = _plain(release)
    publish(client_config, f"{topology.workflow}.plan.standard", sent)
    worker = StageWorker(
        topology, "plan", client_config, handler=handler, options=WorkerOptions(handler_threads=48)
    )
    running = WorkerThread(worker).start()
    try:
        _check(client_config, topology, sent, kinds, expected)
        assert running.thread.is_alive() and running.error is None
        if isinstance(handler, AsyncCallable):
            assert handler.cancels_seen == kinds.count(b"hang")  # cancelled on timeout
    finally:
        release.set()
        running.stop()
    assert running.error is None


def test_handler_threads_that_all_hang_hold_the_stage_instead_of_burning_records(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {"handler_timeout_s": 0.5, "concurrency": 4}})
    release = threading.Event()
    started: list[str] = []

    def handler(event: Any, ctx: Any) -> None:
        started.append(event.run_id)
        if event.payload == b"hang":
            release.wait(120)
        ctx.emit(event)

    hung = events(topology, "plan", 4, payload=b"hang")
    rest = events(topology, "plan", 40)
    publish(client_config, f"{topology.workflow}.plan.standard", hung)
    worker = StageWorker(topology, "plan", client_config, handler=handler)
    running = WorkerThread(worker).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker.status().holding != "stuck_handlers":
            time.sleep(0.1)
        assert worker.status().holding == "stuck_handlers"
        assert worker.status().stuck_handlers == 4
        publish(client_config, f"{topology.workflow}.plan.standard", rest)
        time.sleep(3.0)  # six timeouts' worth: nothing new may start, nothing is burned
        assert len(started) == 4
        release.set()  # the calls return (late): their threads serve again
        out = read_events(client_config, topology.completed_topic, 3, expect=40, timeout_s=60)
        dead = read_dead_letters(client_config, topology.dead_letter_topic, 3, expect=4)
        assert sorted(e.run_id for e in out) == sorted(e.run_id for e in rest)
        assert sorted(d.reason for d in dead) == ["timeout"] * 4
        assert running.thread.is_alive() and running.error is None
    finally:
        release.set()
        running.stop()
