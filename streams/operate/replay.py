"""`streams dlq replay` and `streams escalations replay`: chosen dead letters (escalations)
sent back through the intake's admission, one at a time at a ceiling rate, each recorded
on `W.replays` under its topic and place.

Owns the order (oldest dead first), the pace, and what is sent again; must not decide
admission (the door's intake does) or build requests (streams.operate.replay_plan does).

Idempotent: before sending, the replays topic is read; a dead letter whose newest record
there says it was admitted (accepted, delayed, downgraded, or collapsed into an earlier
replay) is reported `already_replayed` and not sent. Those refused (rejected, invalid,
outcome unknown, unavailable) are tried again by the next replay. A command that dies
between the intake's decision and its record is covered by the replay's idempotency key:
the next replay of that dead letter collapses into the run already admitted (within the
intake's `dedupe_window_s`).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streams.errors import OutcomeUnknown
from streams.events import TaskEvent
from streams.inspect.dead_letters import DeadLetterEntry
from streams.intake.requests import InvalidRequest
from streams.operate.doors import AdmissionDoor, DoorUnavailable
from streams.operate.replay_log import replay_id
from streams.operate.replay_plan import (
    ADMITTED,
    ReplayItem,
    ReplayResult,
    as_item,
    replay_key,
    result_of,
    run_request,
    submitted_event,
)
from streams.policy.token_bucket import TokenBucket


class ReplayBook(Protocol):
    """Where replays are recorded (streams.operate.replay_log.ReplayLog)."""

    def read(self) -> dict[str, dict[str, Any]]: ...

    def write(self, key: str, record: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    rate_per_s: float = 5.0
    #: A new deadline for every replayed run (epoch ms); None keeps each run's own.
    deadline_ms: int | None = None
    dry_run: bool = False
    #: Restart runs that died after the entry stage from their submission (`submissions`).
    from_entry: bool = False


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    workflow: str
    dead_letter_topic: str
    entry_stage: str


def replay(
    entries: Iterable[DeadLetterEntry | ReplayItem],
    target: ReplayTarget,
    log: ReplayBook,
    open_door: Callable[[], AdmissionDoor],
    options: ReplayOptions,
    *,
    submissions: Mapping[str, TaskEvent] | None = None,
    on_result: Callable[[ReplayResult], None] = lambda _: None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ReplayResult]:
    """Replay `entries` (oldest dead first); the door is opened only when something is to
    be sent. Each result goes to `on_result` as it is known. `target.dead_letter_topic` is
    the topic the entries were read from (W.dlq or W.escalations)."""
    submissions = submissions or {}
    ordered = sorted((as_item(e) for e in entries), key=lambda e: e.at_ms)
    earlier = log.read()
    bucket = TokenBucket(options.rate_per_s, 1.0, monotonic())
    door: AdmissionDoor | None = None
    results: list[ReplayResult] = []
    stopped: str | None = None

    def done(result: ReplayResult) -> None:
        results.append(result)
        on_result(result)

    try:
        for entry in ordered:
            event = submitted_event(
                entry, target.entry_stage, from_entry=options.from_entry, submissions=submissions
            )
            if isinstance(event, str):
                done(ReplayResult(entry.id, entry.run_id, "skipped", str(event)))
                continue
            key = replay_key(event, *_place(entry))
            prior = earlier.get(replay_id(target.dead_letter_topic, entry.id))
            if (
                prior is not None
                and prior["dead_at"] == entry.at_ms
                and prior["outcome"] in ADMITTED
            ):
                done(
                    ReplayResult(
                        entry.id, entry.run_id, "already_replayed",
                        f"{prior['outcome']} at {prior['replayed_at']} by {prior['replayed_by']}",
                        prior["run_id"], key,
                    )
                )  # fmt: skip
                continue
            if options.dry_run:
                done(ReplayResult(entry.id, entry.run_id, "would_replay", "dry run", None, key))
                continue
            if stopped is not None:
                done(ReplayResult(entry.id, entry.run_id, "unavailable", stopped, None, key))
                continue
            if door is None:
                door = open_door()
            _pace(bucket, monotonic, sleep)
            request = run_request(event, key, options.deadline_ms or event.deadline_ms)
            try:
                result = result_of(entry, key, door.submit(request))
            except InvalidRequest as exc:
                result = ReplayResult(entry.id, entry.run_id, "invalid", str(exc), None, key)
            except OutcomeUnknown as exc:
                result = ReplayResult(
                    entry.id, entry.run_id, "unknown", f"{exc} (replay again to learn)",
                    exc.run_id or None, key, exc.retry_after_s,
                )  # fmt: skip
            except DoorUnavailable as exc:
                stopped = f"not sent: {door.description} was unavailable ({exc})"
                result = ReplayResult(entry.id, entry.run_id, "unavailable", str(exc), None, key)
            if result.outcome in ADMITTED or result.outcome == "rejected":
                log.write(
                    replay_id(target.dead_letter_topic, entry.id),
                    _record(target, entry, result, door.description),
                )
            done(result)
    finally:
        if door is not None:
            door.close()
    return results


def _place(entry: ReplayItem) -> tuple[int, int]:
    partition, offset = entry.id.split(":")
    return int(partition), int(offset)


def _pace(
    bucket: TokenBucket, monotonic: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    while not bucket.try_take(monotonic()):
        sleep(bucket.wait_s(monotonic()))


def _record(
    target: ReplayTarget, entry: ReplayItem, result: ReplayResult, via: str
) -> dict[str, Any]:
    assert entry.run_id is not None
    partition, offset = _place(entry)
    return {
        "workflow": target.workflow,
        "dead_letter_topic": target.dead_letter_topic,
        "dead_letter_partition": partition,
        "dead_letter_offset": offset,
        "dead_at": entry.at_ms,
        "original_run_id": entry.run_id,
        "idempotency_key": result.idempotency_key or "",
        "outcome": result.outcome,
        "reason": result.reason,
        "run_id": result.run_id,
        "retry_after_s": result.retry_after_s,
        "replayed_at": int(time.time() * 1000),
        "replayed_by": f"{getpass.getuser()}@{socket.gethostname()} via {via}",
    }
