"""`streams dlq` and `streams tail`, their pure parts: decoding dead letters (and the task
events inside them when they can be decoded), filters, --since, and the printed forms."""

from __future__ import annotations

import pytest

from streams.events import DeadLetterCodec, DeadLetterRecord, TaskEventCodec, new_task_event
from streams.inspect.dead_letters import (
    DeadLetterFilter,
    decode_entry,
    list_line,
    parse_since,
    show_text,
)
from streams.inspect.records import record_line
from streams.types import Record

NOW = 1_764_637_200.0  # 2025-12-02 01:00:00 UTC


def letter(raw: bytes | None, *, stage: str = "plan", reason: str = "handler_error") -> bytes:
    return DeadLetterCodec().encode(
        DeadLetterRecord(
            original_topic="wf.plan.standard", original_partition=1, original_offset=42,
            original_timestamp_ms=int(NOW * 1000) - 5000, original_key=b"run-1",
            raw_value=raw, original_headers=(("trace", b"abc"),),
            reason=reason,  # type: ignore[arg-type]
            error_type="builtins.RuntimeError", error_message="the model said no",
            stage=stage, workflow="wf", attempts=1, dead_at_ms=int(NOW * 1000) - 1000,
        )
    )  # fmt: skip


def event_bytes(payload: bytes = b'{"q": "refund"}') -> bytes:
    event = new_task_event(
        workflow="wf", stage="plan", tenant="acme", lane="standard", payload=payload,
        now_ms=int(NOW * 1000), run_id="run-1",
    )  # fmt: skip
    return TaskEventCodec().encode(event)


def test_a_dead_letter_with_a_task_event_inside_is_decoded_all_the_way() -> None:
    entry = decode_entry(0, 17, letter(event_bytes()))
    assert entry.id == "0:17"
    assert entry.letter is not None and entry.letter.reason == "handler_error"
    assert entry.event is not None and entry.event.tenant == "acme"
    assert entry.run_id == "run-1"
    line = list_line(entry)
    assert "0:17" in line and "plan" in line and "handler_error" in line
    assert "wf.plan.standard[1]@42" in line and "run-1" in line and "the model said no" in line
    text = show_text(entry)
    assert "tenant: acme" in text and '{"q": "refund"}' in text and "trace" in text


def test_raw_bytes_that_are_no_task_event_are_printed_as_they_are() -> None:
    entry = decode_entry(1, 3, letter(b"\x00\xffnot avro", reason="decode_error"))
    assert entry.event is None and entry.run_id == "run-1"  # from the record key
    text = show_text(entry)
    assert "not a task event" in text
    assert "00 ff 6e 6f 74" in text  # a hex dump of the raw value


def test_a_record_that_is_no_dead_letter_is_listed_not_dropped() -> None:
    entry = decode_entry(0, 5, b"garbage")
    assert entry.letter is None
    assert "undecodable" in list_line(entry)
    assert "67 61 72 62" in show_text(entry)


def test_filters() -> None:
    plan = decode_entry(0, 1, letter(event_bytes()))
    act = decode_entry(0, 2, letter(None, stage="act", reason="expired"))
    junk = decode_entry(0, 3, b"junk")
    since_ms = int(NOW * 1000) - 2000
    assert DeadLetterFilter(stage="plan").matches(plan)
    assert not DeadLetterFilter(stage="plan").matches(act)
    assert DeadLetterFilter(reason="expired").matches(act)
    assert DeadLetterFilter(run_id="run-1").matches(plan)
    assert not DeadLetterFilter(run_id="run-2").matches(plan)
    assert DeadLetterFilter(since_ms=since_ms).matches(plan)  # dead 1 s ago
    assert not DeadLetterFilter(since_ms=int(NOW * 1000)).matches(plan)
    assert DeadLetterFilter().matches(junk) and not DeadLetterFilter(stage="plan").matches(junk)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - 30),
        ("10m", NOW - 600),
        ("2h", NOW - 7200),
        ("1d", NOW - 86_400),
        ("2025-12-02T00:00:00Z", NOW - 3600),
        ("2025-12-02T01:00:00+01:00", NOW - 3600),
    ],
)
def test_since_takes_durations_and_instants(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == int(expected * 1000)


def test_since_says_what_it_takes() -> None:
    with pytest.raises(ValueError, match="10m"):
        parse_since("yesterday", NOW)


def test_record_line_for_tail() -> None:
    record = Record("wf.plan.urgent", 2, 9, b"run-1", event_bytes(), int(NOW * 1000))
    line = record_line(record)
    assert "wf.plan.urgent[2]@9" in line and "run-1" in line and "acme" in line
    assert '{"q": "refund"}' in line
    odd = record_line(Record("wf.completed", 0, 1, None, b"\x01\x02", int(NOW * 1000)))
    assert "not a task event" in odd and "2 bytes" in odd
