"""Watches the loops of this process that must keep turning (each worker's poll loop, the
event loop its async handlers share) and logs, once per stall, where a stuck one is.

One daemon thread per process looks at every registered loop a few times a second. A
loop says it turned by storing the time in its Beat (an attribute store, cheap enough
for once per poll), from its own thread. Nothing here can unstick a loop: the stack it
logs names the call that holds it (an async handler blocking the loop thread with a sync
call, a client call waiting on a broker), which is what an operator needs to see.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import ClassVar

from streams.policy.loop_stall import LoopStallGate

log = logging.getLogger(__name__)

#: Innermost frames of a stuck loop's stack that the warning shows.
_STACK_FRAMES = 12


class Beat:
    """One watched loop: `last` is when it last turned (time.monotonic())."""

    __slots__ = ("gate", "last", "name", "thread_id")

    def __init__(self, name: str, thread_id: int, after_s: float) -> None:
        self.name = name
        self.thread_id = thread_id
        self.gate = LoopStallGate(after_s)
        self.last = time.monotonic()


class LoopWatch:
    """LoopWatch.shared() is the process's; watch() and unwatch() from any thread."""

    _shared: ClassVar[LoopWatch | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, every_s: float = 0.25) -> None:
        self._every_s = every_s
        self._beats: dict[int, Beat] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> LoopWatch:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def watch(self, name: str, thread_id: int, after_s: float) -> Beat:
        beat = Beat(name, thread_id, after_s)
        with self._lock:
            self._beats[id(beat)] = beat
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="loop-watch", daemon=True)
                self._thread.start()
        return beat

    def unwatch(self, beat: Beat) -> None:
        with self._lock:
            self._beats.pop(id(beat), None)

    def look(self, now: float | None = None) -> None:
        """Judge every loop once (the watch thread's step; tests call it directly)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            beats = list(self._beats.values())
        for beat in beats:
            verdict = beat.gate.observe(beat.last, now)
            if verdict is None:
                continue
            if verdict.what == "turned":
                log.warning("%s turned again after %.1f s stuck", beat.name, verdict.stuck_s)
                continue
            log.warning(
                "%s has not turned for %.1f s; it is in:\n%s",
                beat.name,
                verdict.stuck_s,
                stack_of(beat.thread_id),
            )

    def _run(self) -> None:
        while True:
            time.sleep(self._every_s)
            try:
                self.look()
            except Exception:  # the watch must outlive anything it looks at
                log.exception("loop watch")


def stack_of(thread_id: int) -> str:
    """The innermost frames of that thread's stack now, formatted ("" if it has ended)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return "  (the thread has ended)"
    lines = traceback.format_stack(frame)[-_STACK_FRAMES:]
    return "".join(lines).rstrip()
