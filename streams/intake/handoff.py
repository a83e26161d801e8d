"""Hands results from the intake's I/O thread to callbacks on event loops, waking each loop
once per I/O iteration. Owns that wake-up; decides nothing.

Each loop.call_soon_threadsafe writes to the loop's self-pipe (a syscall, and a wake-up of
the loop's thread); one broker poll can serve hundreds of acknowledgements, so post() only
queues and flush() wakes each loop once with everything queued for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]


class LoopHandoff:
    """post() from any thread (acks are served on the I/O thread, and on a sending thread
    while the producer queue is full); flush() from the I/O thread after each poll. The
    callbacks run on their loop, in the order posted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[asyncio.AbstractEventLoop, list[tuple[Callback, Any]]] = {}

    def post(self, loop: asyncio.AbstractEventLoop, callback: Callback, arg: Any) -> None:
        with self._lock:
            items = self._queued.get(loop)
            if items is None:
                self._queued[loop] = [(callback, arg)]
            else:
                items.append((callback, arg))

    def flush(self) -> int:
        """Wake every loop with results queued; returns how many results were handed over."""
        if not self._queued:
            return 0
        with self._lock:
            queued, self._queued = self._queued, {}
        handed = 0
        for loop, items in queued.items():
            handed += len(items)
            # A late ack may arrive after its caller's loop has gone (the request timed out
            # and the server stopped): there is nobody left to tell.
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed between check and call
                    loop.call_soon_threadsafe(_run_all, items)
        return handed


def _run_all(items: list[tuple[Callback, Any]]) -> None:
    for callback, arg in items:
        try:
            callback(arg)
        except Exception:  # one bad callback must not strand the results after it
            logging.getLogger(__name__).exception("intake hand-off callback failed")


class KnownWaiters:
    """Coroutines waiting until the ledger book knows every offset below a given one. The
    I/O thread calls release() after each read; each ready waiter's future is settled
    through the hand-off."""

    def __init__(self, handoff: LoopHandoff) -> None:
        self._handoff = handoff
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self, offset: int, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting.append((offset, loop, future))
        return future

    def waiting(self) -> bool:
        return bool(self._waiting)

    def release(self, known_before: Callable[[int], bool]) -> None:
        if not self._waiting:
            return
        ready: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        waiting: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        with self._lock:
            for waiter in self._waiting:
                if waiter[2].done():  # its batch gave up waiting (timed out): forget it
                    continue
                (ready if known_before(waiter[0]) else waiting).append(waiter)
            self._waiting = waiting
        for _, loop, future in ready:
            self._handoff.post(loop, _settle, future)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
