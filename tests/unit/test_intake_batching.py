"""Group commit gathers the submissions of one loop iteration into one batch; the hand-off
wakes each event loop once per flush, with every result for it, in order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from streams.intake.group_commit import GroupCommit, Submission
from streams.intake.handoff import KnownWaiters, LoopHandoff
from streams.intake.requests import Decision, RunRequest


def _accept_all(batches: list[list[Submission]]) -> Any:
    async def run(batch: list[Submission]) -> None:
        batches.append(batch)
        await asyncio.sleep(0)
        for sub in batch:
            sub.answer.set_result(Decision("accepted", "admitted", "standard", "standard"))

    return run


def test_submissions_woken_together_form_one_batch_and_each_gets_its_answer() -> None:
    batches: list[list[Submission]] = []

    async def scenario() -> list[Decision]:
        group = GroupCommit(asyncio.get_running_loop(), _accept_all(batches), max_batch=100)

        async def submit(i: int) -> Decision:
            return await group.add(RunRequest(f"t{i}", b"{}"), now_ms=i)

        first = await asyncio.gather(*(submit(i) for i in range(30)))
        second = await submit(99)  # alone: a batch of one
        return [*first, second]

    answers = asyncio.run(scenario())
    assert [len(b) for b in batches] == [30, 1]
    assert [s.request.tenant for s in batches[0]] == [f"t{i}" for i in range(30)]
    assert len(answers) == 31 and all(a.outcome == "accepted" for a in answers)


def test_a_batch_never_exceeds_its_bound() -> None:
    batches: list[list[Submission]] = []

    async def scenario() -> None:
        group = GroupCommit(asyncio.get_running_loop(), _accept_all(batches), max_batch=8)
        await asyncio.gather(*(group.add(RunRequest("t", b"{}"), now_ms=0) for _ in range(20)))

    asyncio.run(scenario())
    assert [len(b) for b in batches] == [8, 8, 4]


def test_the_hand_off_wakes_a_loop_once_per_flush_with_all_its_results_in_order() -> None:
    handoff = LoopHandoff()
    seen: list[int] = []
    wakeups = 0

    async def scenario() -> None:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        done = loop.create_future()

        def io_thread() -> None:  # as the intake's I/O thread: post many, flush once
            for i in range(50):
                handoff.post(loop, seen.append, i)
            handoff.post(loop, lambda _: done.set_result(None), None)
            handoff.flush()

        threading.Thread(target=io_thread).start()
        await asyncio.wait_for(done, 5)

    asyncio.run(scenario())
    assert seen == list(range(50))
    assert wakeups == 1


def test_a_read_back_waiter_is_released_once_its_offsets_are_known() -> None:
    handoff = LoopHandoff()
    waiters = KnownWaiters(handoff)
    known_to = [-1]

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        early, late = waiters.add(3, loop), waiters.add(10, loop)
        known_to[0] = 5
        waiters.release(lambda offset: known_to[0] >= offset - 1)
        handoff.flush()
        await asyncio.wait_for(early, 5)
        return [early.done(), late.done()]

    assert asyncio.run(scenario()) == [True, False]
