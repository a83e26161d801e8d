"""streams.faust's record gate: faust's Message as streams' Record, and which records the
agent may see (pure: fake times, no broker)."""

from __future__ import annotations

from faust.types import TP, Message

from streams.events import TaskEventCodec, new_task_event
from streams.faust._gate import Refused, admit, to_record

NOW = 1_700_000_000.0
CODEC = TaskEventCodec()


def message(value: bytes | None, headers: object = None) -> Message:
    return Message(
        "wf.fa.standard", 2, 41, NOW - 1.5, 0, headers, b"run-1", value, None,  # type: ignore[arg-type]
        tp=TP("wf.fa.standard", 2),
    )  # fmt: skip


def encoded(age_s: float = 0.0, deadline_ms: int | None = None) -> bytes:
    event = new_task_event(
        workflow="wf", stage="fa", tenant="t", lane="standard", payload=b"{}",
        now_ms=int((NOW - age_s) * 1000), deadline_ms=deadline_ms,
    )  # fmt: skip
    return CODEC.encode(event)


def test_a_message_becomes_a_record_with_milliseconds_and_header_pairs() -> None:
    record = to_record(message(b"x", [("trace.id", b"abc")]))
    assert (record.topic, record.partition, record.offset) == ("wf.fa.standard", 2, 41)
    assert record.timestamp_ms == int((NOW - 1.5) * 1000)
    assert record.key == b"run-1" and record.value == b"x"
    assert record.headers == (("trace.id", b"abc"),)
    assert to_record(message(b"x", {"a": b"1"})).headers == (("a", b"1"),)
    assert to_record(message(b"x")).headers == ()


def test_fresh_events_pass_and_old_ones_or_past_deadline_are_expired() -> None:
    fresh = admit(to_record(message(encoded(age_s=1))), CODEC, max_queue_age_s=60, now=NOW)
    assert not isinstance(fresh, Refused) and fresh.workflow == "wf"
    old = admit(to_record(message(encoded(age_s=61))), CODEC, max_queue_age_s=60, now=NOW)
    assert isinstance(old, Refused) and old.reason == "expired"
    assert "max_queue_age_s" in str(old.error)
    late = encoded(deadline_ms=int(NOW * 1000) - 1)
    past = admit(to_record(message(late)), CODEC, max_queue_age_s=60, now=NOW)
    assert isinstance(past, Refused) and past.reason == "expired"
    assert "deadline" in str(past.error)


def test_bytes_that_are_no_envelope_and_tombstones_are_decode_errors() -> None:
    for value in (b"not an envelope", None):
        refused = admit(to_record(message(value)), CODEC, max_queue_age_s=60, now=NOW)
        assert isinstance(refused, Refused) and refused.reason == "decode_error"
