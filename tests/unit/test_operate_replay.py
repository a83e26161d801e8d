"""`streams dlq replay`'s rules without a broker: the derived idempotency key, what is
skipped, the pace (fake clock), what is recorded, and that a second replay sends nothing
already admitted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streams.events import DeadLetterRecord, TaskEvent, new_task_event
from streams.inspect.dead_letters import DeadLetterEntry
from streams.intake.requests import MAX_IDEMPOTENCY_KEY_LEN, Decision, RunRequest
from streams.operate.doors import DoorUnavailable
from streams.operate.replay import ReplayOptions, ReplayTarget, replay
from streams.operate.replay_plan import parse_duration_s, replay_key, summary_line

TARGET = ReplayTarget("wf", "wf.dlq", "plan")


def event(key: str | None = "ticket-1", run_id: str = "run-1") -> TaskEvent:
    return new_task_event(
        workflow="wf", stage="plan", tenant="acme", lane="urgent", payload=b'{"a": 1}',
        now_ms=1_000, priority=3, idempotency_key=key, deadline_ms=99_000,
        trace_context={"traceparent": "00-ab-cd-01"}, run_id=run_id,
    )  # fmt: skip


def entry(offset: int, *, stage: str = "plan", ev: TaskEvent | None = None) -> DeadLetterEntry:
    ev = ev or event(run_id=f"run-{offset}", key=f"ticket-{offset}")
    letter = DeadLetterRecord(
        original_topic="wf.plan.urgent", original_partition=0, original_offset=offset,
        original_timestamp_ms=1_000, original_key=ev.run_id.encode(), raw_value=b"raw",
        original_headers=(), reason="handler_error", error_type="RuntimeError",
        error_message="no", stage=stage, workflow="wf", attempts=1, dead_at_ms=2_000 + offset,
    )  # fmt: skip
    return DeadLetterEntry(f"1:{offset}", b"", letter, ev, None, None)


class Book:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def read(self) -> dict[str, dict[str, Any]]:
        return dict(self.records)

    def write(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = record


class Door:
    """Admits `room` runs, then rejects; fails with DoorUnavailable from `fail_at` on."""

    description = "fake intake"

    def __init__(self, clock: list[float], room: int, fail_at: int | None = None) -> None:
        self.clock = clock
        self.room = room
        self.fail_at = fail_at
        self.sent: list[tuple[float, RunRequest]] = []
        self.closed = False

    def submit(self, request: RunRequest) -> Decision:
        if self.fail_at is not None and len(self.sent) >= self.fail_at:
            raise DoorUnavailable("broker down")
        self.sent.append((self.clock[0], request))
        if len(self.sent) > self.room:
            return Decision("rejected", "workflow_full", request.lane, request.lane,
                            retry_after_s=4.0)  # fmt: skip
        return Decision("accepted", "admitted", request.lane, request.lane,
                        run_id=f"new-{len(self.sent)}")  # fmt: skip

    def close(self) -> None:
        self.closed = True


def run(entries: list[DeadLetterEntry], book: Book, door: Door, clock: list[float],
        rate: float = 2.0, **options: Any) -> list[Any]:  # fmt: skip
    def sleep(seconds: float) -> None:
        clock[0] += seconds

    return replay(
        entries, TARGET, book, lambda: door, ReplayOptions(rate, **options),
        monotonic=lambda: clock[0], sleep=sleep,
    )  # fmt: skip


def test_the_replay_key_is_the_original_key_plus_the_dead_letters_place() -> None:
    assert replay_key(event("ticket-1"), 2, 17) == "ticket-1~replay:2:17"
    assert replay_key(event(None, run_id="abc"), 0, 5) == "abc~replay:0:5"
    long_key = replay_key(event("k" * MAX_IDEMPOTENCY_KEY_LEN), 1, 1)
    assert len(long_key) <= MAX_IDEMPOTENCY_KEY_LEN and long_key.startswith("sha256-")
    assert long_key == replay_key(event("k" * MAX_IDEMPOTENCY_KEY_LEN), 1, 1)


def test_replays_are_paced_recorded_and_not_sent_twice() -> None:
    clock = [100.0]
    book = Book()
    door = Door(clock, room=3)
    entries = [entry(n) for n in (5, 3, 4, 6)]  # dead_at follows the offset: 3 died first
    first = run(entries, book, door, clock, rate=2.0)
    assert [r.original_run_id for r in first] == ["run-3", "run-4", "run-5", "run-6"]
    assert [r.outcome for r in first] == ["accepted"] * 3 + ["rejected"]
    assert [t for t, _ in door.sent] == [100.0, 100.5, 101.0, 101.5]  # 2 a second
    request = door.sent[0][1]
    assert (request.tenant, request.lane, request.priority, request.deadline_ms) == (
        "acme", "urgent", 3, 99_000,
    )  # fmt: skip
    assert request.payload == b'{"a": 1}' and request.idempotency_key == "ticket-3~replay:1:3"
    assert dict(request.trace_context) == {"traceparent": "00-ab-cd-01"}
    assert door.closed and len(book.records) == 4
    assert book.records["wf.dlq/1:6"]["outcome"] == "rejected"
    assert book.records["wf.dlq/1:3"]["run_id"] == "new-1"

    door2 = Door(clock, room=10)
    second = run(entries, book, door2, clock)
    assert [r.outcome for r in second] == ["already_replayed"] * 3 + ["accepted"]
    assert [r.run_id for r in second[:3]] == ["new-1", "new-2", "new-3"]
    assert len(door2.sent) == 1  # only the one refused before
    assert summary_line(second) == "1 accepted, 3 already replayed"

    door3 = Door(clock, room=10)
    assert [r.outcome for r in run(entries, book, door3, clock)] == ["already_replayed"] * 4
    assert door3.sent == [] and not door3.closed  # no door opened when nothing is to send


def test_skips_dry_run_new_deadline_and_an_unavailable_intake() -> None:
    clock = [0.0]
    later = entry(9, stage="act")
    undecodable = DeadLetterEntry("1:10", b"", entry(10).letter, None, None, "bad bytes")
    dry = run([entry(1), later, undecodable], Book(), Door(clock, 10), clock, dry_run=True)
    assert [r.outcome for r in dry] == ["would_replay", "skipped", "skipped"]
    assert "entry stage plan" in dry[1].reason and "no task event" in dry[2].reason

    door = Door(clock, room=10)
    run([entry(1)], Book(), door, clock, deadline_ms=555)
    assert door.sent[0][1].deadline_ms == 555

    book = Book()
    down = run([entry(1), entry(2), entry(3)], book, Door(clock, 10, fail_at=1), clock)
    assert [r.outcome for r in down] == ["accepted", "unavailable", "unavailable"]
    assert "not sent" in down[2].reason
    assert list(book.records) == ["wf.dlq/1:1"]  # failures are not recorded as replays


def test_durations() -> None:
    assert parse_duration_s("10m") == 600 and parse_duration_s("1.5h") == 5400
    for bad in ("0s", "soon", "-1m"):
        try:
            parse_duration_s(bad)
        except ValueError as exc:
            assert "10m" in str(exc)
        else:
            raise AssertionError(bad)


def test_a_later_stages_dead_letter_restarts_from_its_submission_only_when_asked() -> None:
    clock = [0.0]
    submission = event("t-7", run_id="run-7")
    later = entry(7, stage="act", ev=replace(submission, stage="act", payload=b"plan's output"))
    skipped = run([later], Book(), Door(clock, 10), clock)
    assert skipped[0].outcome == "skipped" and "--from-entry" in skipped[0].reason

    missing = run([later], Book(), Door(clock, 10), clock, from_entry=True)
    assert missing[0].outcome == "skipped" and "retention" in missing[0].reason

    door = Door(clock, 10)
    restarted = replay(
        [later], TARGET, Book(), lambda: door, ReplayOptions(2.0, from_entry=True),
        submissions={"run-7": submission}, monotonic=lambda: clock[0], sleep=lambda s: None,
    )  # fmt: skip
    assert restarted[0].outcome == "accepted"
    sent = door.sent[0][1]
    assert sent.payload == b'{"a": 1}' and sent.idempotency_key == "t-7~replay:1:7"
