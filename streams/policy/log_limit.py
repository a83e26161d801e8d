"""Deduplicates and rate-limits a Kafka client's log lines: one line per broker state change
(down with its reason, back after how long) and a periodic summary of what was suppressed.

Pure: times are passed in, lines to print are returned; must not log or read a clock.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

Level = Literal["error", "warning", "info"]
Line = tuple[Level, str]

# librdkafka prefixes broker messages with "[thrd:...]: " and then "host:port/id: ".
_THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")
_BROKER = re.compile(r"^(?:\w+://)?(?P<broker>[^\s/]+:\d+)/\S+:\s*(?P<reason>.*)$")
_NUMBERS = re.compile(r"\d+")
#: librdkafka facilities and error names that mean "cannot reach this broker".
_BROKER_DOWN = frozenset({"FAIL", "_TRANSPORT", "_ALL_BROKERS_DOWN", "ERROR"})


def split_broker(message: str) -> tuple[str | None, str]:
    """("127.0.0.1:9092", reason) for a broker's message, (None, message) otherwise."""
    text = _THREAD.sub("", message)
    match = _BROKER.match(text)
    if match is None:
        return None, text
    return match["broker"], match["reason"]


class ClientLogGate:
    """Decides which client log lines reach the log.

    A broker-failure line (FAIL, _TRANSPORT) for a broker not yet known to be down prints
    "broker B down: reason"; the rest for it are counted until broker_up(B) prints "broker B
    back after N s". Any other line prints the first time its text (numbers ignored) is seen
    in repeat_every_s and is counted otherwise. Every summary_every_s, if anything was
    counted, one line says how many were suppressed, per facility.
    """

    def __init__(self, *, summary_every_s: float = 60.0, repeat_every_s: float = 60.0) -> None:
        if summary_every_s <= 0 or repeat_every_s <= 0:
            raise ValueError("summary_every_s and repeat_every_s must be > 0")
        self._summary_every_s = summary_every_s
        self._repeat_every_s = repeat_every_s
        self._down_since: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._window_start: float | None = None

    @property
    def brokers_down(self) -> frozenset[str]:
        return frozenset(self._down_since)

    def line(self, facility: str, message: str, now: float, level: Level = "warning") -> list[Line]:
        """A client log line (or error event); returns the lines to print."""
        out = self.tick(now)
        broker, reason = split_broker(message)
        if broker is not None and facility in _BROKER_DOWN:
            if broker not in self._down_since:
                self._down_since[broker] = now
                out.append(("warning", f"broker {broker} down: {reason}"))
            else:
                self._suppressed[facility] += 1
            return out
        key = f"{facility} {_NUMBERS.sub('#', message)}"
        last = self._last_seen.get(key)
        if last is not None and now - last < self._repeat_every_s:
            self._suppressed[facility] += 1
            return out
        self._last_seen[key] = now
        if len(self._last_seen) > 1000:  # bounded: forget the oldest texts
            for old in sorted(self._last_seen, key=self._last_seen.__getitem__)[:500]:
                del self._last_seen[old]
        out.append((level, f"{facility}: {_THREAD.sub('', message)}"))
        return out

    def broker_up(self, broker: str, now: float) -> list[Line]:
        out = self.tick(now)
        since = self._down_since.pop(broker, None)
        if since is not None:
            out.append(("info", f"broker {broker} back after {now - since:.0f} s"))
        return out

    def tick(self, now: float) -> list[Line]:
        """The summary line when one is due (call now and then even without lines)."""
        if self._window_start is None:
            self._window_start = now
            return []
        elapsed = now - self._window_start
        if elapsed < self._summary_every_s:
            return []
        self._window_start = now
        if not self._suppressed:
            return []
        total = sum(self._suppressed.values())
        parts = ", ".join(f"{fac} x{n}" for fac, n in self._suppressed.most_common())
        self._suppressed.clear()
        return [
            ("info", f"suppressed {total} client log lines in the last {elapsed:.0f} s: {parts}")
        ]
