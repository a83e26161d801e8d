"""What a `streams worker --processes N` supervisor does when one of its children exits on
its own: restart it after a capped backoff, or stop the whole group.

Owns that decision only; must not do I/O nor read a clock (callers pass monotonic times).

    started(index, now)          a child was (re)started
    exited(index, status, now)   it exited without being asked to: Restart(after_s) or
                                 StopGroup(reason)

Exit status 1 is the worker's own clear error (it printed one `error:` line: refused
credentials, the dead-letter valve tripped, ...): every child runs the same stage with the
same settings, so restarting it would only repeat the error; the group stops. Any other
status (killed by a signal, a crash, even 0 when nobody asked it to stop) is restarted:
the first wait is first_backoff_s, doubling on each quick death up to max_backoff_s, and a
child that ran healthy_after_s starts over at first_backoff_s. max_crashes deaths within
window_s, across the group, mean the restarts do not help: the group stops.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass

__all__ = ["Restart", "RestartLimits", "RestartPolicy", "StopGroup", "describe_status"]

#: The status a worker exits with after printing its own `error:` line (cli._run).
WORKER_ERROR_STATUS = 1


@dataclass(frozen=True, slots=True)
class RestartLimits:
    max_crashes: int = 5
    window_s: float = 60.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    healthy_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_crashes < 1 or self.window_s <= 0:
            raise ValueError("need max_crashes >= 1 and window_s > 0")
        if not 0 < self.first_backoff_s <= self.max_backoff_s:
            raise ValueError("need 0 < first_backoff_s <= max_backoff_s")


@dataclass(frozen=True, slots=True)
class Restart:
    after_s: float


@dataclass(frozen=True, slots=True)
class StopGroup:
    reason: str  # one line, for the supervisor's `error:` line


def describe_status(status: int) -> str:
    """`status 3`, or `killed by SIGKILL` for a negative Popen return code."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"


class RestartPolicy:
    def __init__(self, limits: RestartLimits | None = None) -> None:
        self.limits = limits or RestartLimits()
        self._started_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}  # per child, since it last ran healthy
        # Only the last max_crashes deaths matter for the window: a bounded deque.
        self._deaths: deque[float] = deque(maxlen=self.limits.max_crashes)

    def started(self, index: int, now: float) -> None:
        self._started_at[index] = now

    def exited(self, index: int, status: int, now: float) -> Restart | StopGroup:
        what = f"worker process {index} {describe_status(status)}"
        if status == WORKER_ERROR_STATUS:
            return StopGroup(f"{what} (its error is above); stopped the group")
        limits = self.limits
        self._deaths.append(now)
        if len(self._deaths) == limits.max_crashes and now - self._deaths[0] <= limits.window_s:
            return StopGroup(
                f"worker processes died {limits.max_crashes} times within "
                f"{limits.window_s:g} s (last: {what}); stopped the group: see the log above"
            )
        ran_s = now - self._started_at.get(index, now)
        quick = 0 if ran_s >= limits.healthy_after_s else self._quick_deaths.get(index, 0)
        self._quick_deaths[index] = quick + 1
        after_s = min(limits.max_backoff_s, limits.first_backoff_s * 2.0 ** min(quick, 62))
        return Restart(after_s)
