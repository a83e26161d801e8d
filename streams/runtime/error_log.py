"""Failed records in the log: a sampled traceback per error type per minute, and a summary.

Owns turning a stream of failed records into a bounded number of WARNING lines; must not
decide outcomes, count metrics, or let a hostile exception escape while it is printed.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field

from streams.clock import Clock

log = logging.getLogger(__name__)

#: Summaries name this many error types; the rest are counted as "other types".
_SHOWN_TYPES = 8
_OTHER = "other types"
_NO_EXCEPTION = "no exception"


@dataclass(slots=True)
class _Window:
    """What one (stage, reason) saw since its last summary."""

    started: float
    count: int = 0
    sampled: int = 0  # of `count`, shown as samples already
    by_type: dict[str, int] = field(default_factory=dict)


class HandlerErrorLog:
    """Logs failed records at WARNING without ever writing one line per record.

    The poll thread calls ``record(stage, reason, error)`` once per failed record (any
    reason: handler_error, timeout, emit_error, ...; ``error`` is None when there is no
    exception). For each (stage, exception type) the first failure, and then the first
    one after every ``sample_every_s``, is logged with its full traceback (message and
    traceback truncated). Every (stage, reason) that had failures not shown as samples
    gets one summary line ``summary_every_s`` after its window's first failure:
    "stage act: 412 handler errors in the last 60 s: ValueError x400, KeyError x12".

    Summaries are written from ``record`` and from ``flush``: call ``flush()`` on a timer
    (the worker's periodic report) so the last window is told even when failures stop,
    and ``flush(force=True)`` when stopping. Not thread-safe: one thread calls it.
    Memory is bounded: at most ``max_types`` exception types are tracked per stage;
    failures of further types count under "other types" and are not sampled.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        sample_every_s: float = 60.0,
        summary_every_s: float = 60.0,
        max_message_chars: int = 2_000,
        max_sample_chars: int = 10_000,
        max_types: int = 64,
        logger: logging.Logger | None = None,
    ) -> None:
        if sample_every_s <= 0 or summary_every_s <= 0:
            raise ValueError("sample_every_s and summary_every_s must be > 0")
        if max_types < 1:
            raise ValueError(f"max_types must be >= 1, got {max_types}")
        self._clock = clock
        self._sample_every_s = sample_every_s
        self._summary_every_s = summary_every_s
        self._max_message_chars = max_message_chars
        self._max_sample_chars = max_sample_chars
        self._max_types = max_types
        self._log = logger if logger is not None else log
        self._windows: dict[tuple[str, str], _Window] = {}
        self._last_sample: dict[tuple[str, str], float] = {}  # (stage, type) -> monotonic
        self._type_names: dict[type[BaseException], str] = {}

    def record(self, stage: str, reason: str, error: BaseException | None) -> None:
        now = self._clock.monotonic()
        window = self._windows.get((stage, reason))
        if window is not None and now - window.started >= self._summary_every_s:
            self._summarise(stage, reason, window, now)
            window = None
        if window is None:
            window = self._windows[(stage, reason)] = _Window(started=now)
        window.count += 1
        name = _NO_EXCEPTION if error is None else self._type_name(type(error))
        sample_key = (stage, name)
        last = self._last_sample.get(sample_key)
        tracked = last is not None or len(self._last_sample) < self._max_types
        if not tracked:
            name = _OTHER
        window.by_type[name] = window.by_type.get(name, 0) + 1
        if tracked and (last is None or now - last >= self._sample_every_s):
            self._last_sample[sample_key] = now
            window.sampled += 1
            self._log.warning(
                "stage %s: record failed (%s), sample of %s (one per %.0f s):\n%s",
                stage, reason, name, self._sample_every_s, self._format(error),
            )  # fmt: skip

    def flush(self, *, force: bool = False) -> None:
        """Write every summary that is due (all of them with ``force``)."""
        now = self._clock.monotonic()
        for (stage, reason), window in list(self._windows.items()):
            if force or now - window.started >= self._summary_every_s:
                self._summarise(stage, reason, window, now)
        # Forget types not seen for a sample period, so the bound holds over a long run.
        for key, last in list(self._last_sample.items()):
            if now - last >= self._sample_every_s:
                del self._last_sample[key]

    def _summarise(self, stage: str, reason: str, window: _Window, now: float) -> None:
        del self._windows[(stage, reason)]
        if window.count == window.sampled:
            return  # every failure of this window was logged in full already
        ranked = sorted(
            ((n, c) for n, c in window.by_type.items() if n != _OTHER),
            key=lambda item: -item[1],  # stable: ties keep first-seen order
        )
        other = window.by_type.get(_OTHER, 0) + sum(c for _, c in ranked[_SHOWN_TYPES:])
        parts = [f"{n} x{c}" for n, c in ranked[:_SHOWN_TYPES]]
        if other:
            parts.append(f"{_OTHER} x{other}")
        self._log.warning(
            "stage %s: %d %s in the last %.0f s: %s",
            stage, window.count, _plural(reason, window.count), now - window.started,
            ", ".join(parts),
        )  # fmt: skip

    def _type_name(self, kind: type[BaseException]) -> str:
        name = self._type_names.get(kind)
        if name is None:
            module = getattr(kind, "__module__", None)
            qualname = getattr(kind, "__qualname__", "?")
            name = qualname if module in (None, "builtins") else f"{module}.{qualname}"
            if len(self._type_names) < 4 * self._max_types:
                self._type_names[kind] = name
        return name

    def _format(self, error: BaseException | None) -> str:
        if error is None:
            return "(no exception)"
        limit = self._max_message_chars
        try:
            chunks = traceback.TracebackException.from_exception(error).format()
            lines = [
                chunk if len(chunk) <= limit else f"{chunk[:limit]}... [truncated]\n"
                for chunk in chunks
            ]
            text = "".join(lines).rstrip("\n")
        # User code can make printing raise anything, SystemExit included: a log line
        # must never take the poll thread down.
        except BaseException:
            text = f"{self._type_name(type(error))}: <exception could not be formatted>"
        if len(text) > self._max_sample_chars:
            text = f"{text[: self._max_sample_chars]}... [truncated]"
        return text


def _plural(reason: str, count: int) -> str:
    words = reason.replace("_", " ")
    return words if count == 1 else f"{words}s"
