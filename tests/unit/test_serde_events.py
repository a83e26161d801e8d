"""TaskEvent and DeadLetterRecord: dataclass <-> Avro mapping and their codecs."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import DecodeError, SerdeError
from streams.events import (
    DeadLetterCodec,
    DeadLetterRecord,
    TaskEvent,
    TaskEventCodec,
    new_task_event,
)
from streams.serde import SchemaStore, Serde
from streams.types import LANES, Record

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore(REPO_SCHEMAS)


@pytest.fixture(scope="module")
def codec(store: SchemaStore) -> TaskEventCodec:
    return TaskEventCodec(store)


def make_event(**overrides: object) -> TaskEvent:
    event = new_task_event(
        workflow="support",
        stage="triage",
        tenant="acme",
        lane="standard",
        payload=b'{"q": 1}',
        now_ms=NOW_MS,
        priority=2,
        idempotency_key="ticket-7",
        deadline_ms=NOW_MS + 30_000,
        trace_context={"traceparent": "00-ab-cd-01"},
    )
    return dataclasses.replace(event, **overrides)  # type: ignore[arg-type]


def test_new_task_event_sets_identity_and_timestamps() -> None:
    event = make_event()
    assert len(event.run_id) == 32 and int(event.run_id, 16) >= 0
    assert event.created_at_ms == event.enqueued_at_ms == NOW_MS
    assert event.attempt == 0
    assert make_event().run_id != event.run_id


def test_new_task_event_keeps_a_given_run_id() -> None:
    event = new_task_event(
        workflow="w", stage="s", tenant="t", lane="urgent", payload=b"", now_ms=1, run_id="r-1"
    )
    assert event.run_id == "r-1"
    assert event.trace_context == {}


def test_codec_round_trips(codec: TaskEventCodec) -> None:
    event = make_event()
    assert codec.decode(codec.encode(event)) == event


def test_codec_bytes_are_single_object_encoded(codec: TaskEventCodec) -> None:
    assert codec.encode(make_event())[:2] == b"\xc3\x01"


def test_with_stage_moves_the_event_and_restarts_attempts() -> None:
    event = make_event(attempt=3)
    moved = event.with_stage("answer", NOW_MS + 500)
    assert (moved.stage, moved.enqueued_at_ms, moved.attempt) == ("answer", NOW_MS + 500, 0)
    assert moved.created_at_ms == event.created_at_ms
    assert moved.run_id == event.run_id
    assert event.stage == "triage"


def test_trace_context_cannot_be_changed_through_the_event() -> None:
    source = {"traceparent": "00-ab-cd-01"}
    event = make_event(trace_context=source)
    source["traceparent"] = "changed"
    assert event.trace_context["traceparent"] == "00-ab-cd-01"
    with pytest.raises(TypeError):
        event.trace_context["x"] = "y"  # type: ignore[index]


def test_events_are_hashable_and_compare_by_value() -> None:
    event = make_event()
    same = dataclasses.replace(event)
    assert event == same and hash(event) == hash(same)


def test_invalid_lane_fails_at_encode_naming_the_field(codec: TaskEventCodec) -> None:
    with pytest.raises(SerdeError, match="'lane'"):
        codec.encode(make_event(lane="asap"))


def test_v1_bytes_decode_into_an_event_with_defaults(codec: TaskEventCodec, tmp_path: Path) -> None:
    shutil.copy(REPO_SCHEMAS / "history" / "task_event.v1.avsc", tmp_path / "task_event.avsc")
    v1 = Serde(SchemaStore(tmp_path), "TaskEvent")
    record = make_event().to_avro()
    del record["priority"], record["trace_context"]
    event = codec.decode(v1.encode(record))
    assert event.priority == 0
    assert event.trace_context == {}
    assert event.deadline_ms == NOW_MS + 30_000


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.binary(max_size=2048),
    tenant=st.text(max_size=50),
    lane=st.sampled_from(LANES),
    attempt=st.integers(0, 2**31 - 1),
    deadline_ms=st.none() | st.integers(0, 2**62),
    trace=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4),
)
def test_codec_round_trip_property(
    codec: TaskEventCodec,
    payload: bytes,
    tenant: str,
    lane: str,
    attempt: int,
    deadline_ms: int | None,
    trace: dict[str, str],
) -> None:
    event = make_event(
        payload=payload,
        tenant=tenant,
        lane=lane,
        attempt=attempt,
        deadline_ms=deadline_ms,
        trace_context=trace,
    )
    assert codec.decode(codec.encode(event)) == event


def consumed(value: bytes | None) -> Record:
    return Record(
        topic="support.triage.urgent",
        partition=2,
        offset=41,
        key=b"run-1",
        value=value,
        timestamp_ms=NOW_MS,
        headers=(("traceparent", b"00-ab"),),
    )


def test_dead_letter_for_record_keeps_the_original_and_the_error(store: SchemaStore) -> None:
    codec = DeadLetterCodec(store)
    record = consumed(b"\x00garbage")
    try:
        TaskEventCodec(store).decode(b"\x00garbage")
    except DecodeError as exc:
        error = exc
    letter = DeadLetterRecord.for_record(
        record,
        reason="decode_error",
        stage="triage",
        workflow="support",
        attempts=0,
        dead_at_ms=NOW_MS + 5,
        error=error,
    )
    assert letter.error_type == "streams.errors.DecodeError"
    assert letter.error_message is not None and "c3 01" in letter.error_message
    decoded = codec.decode(codec.encode(letter))
    assert decoded == letter
    assert (decoded.original_topic, decoded.original_partition, decoded.original_offset) == (
        "support.triage.urgent",
        2,
        41,
    )
    assert decoded.raw_value == b"\x00garbage"
    assert decoded.original_headers == (("traceparent", b"00-ab"),)


def test_dead_letter_without_error_or_value(store: SchemaStore) -> None:
    codec = DeadLetterCodec(store)
    letter = DeadLetterRecord.for_record(
        consumed(None), reason="expired", stage="s", workflow="w", attempts=0, dead_at_ms=1
    )
    assert letter.error_type is None and letter.error_message is None
    assert codec.decode(codec.encode(letter)) == letter


def test_builtin_error_type_is_unqualified(store: SchemaStore) -> None:
    letter = DeadLetterRecord.for_record(
        consumed(b"x"),
        reason="handler_error",
        stage="s",
        workflow="w",
        attempts=3,
        dead_at_ms=1,
        error=ValueError("bad input"),
    )
    assert (letter.error_type, letter.error_message) == ("ValueError", "bad input")


def test_codec_rejects_a_task_event_as_dead_letter(store: SchemaStore) -> None:
    data = TaskEventCodec(store).encode(make_event())
    with pytest.raises(DecodeError, match="TaskEvent"):
        DeadLetterCodec(store).decode(data)


def test_codecs_default_to_the_repo_schemas() -> None:
    assert TaskEventCodec().serde.schema.path.parent == REPO_SCHEMAS


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise SystemExit("a __str__ that exits")


def test_a_dead_letter_survives_an_error_that_cannot_be_printed() -> None:
    record = Record("wf.plan.standard", 0, 7, b"k", b"raw", 0)
    letter = DeadLetterRecord.for_record(
        record,
        reason="handler_error",
        stage="plan",
        workflow="wf",
        attempts=1,
        dead_at_ms=0,
        error=_Unprintable(),
    )
    assert letter.error_message == "<unprintable _Unprintable>"
    huge = DeadLetterRecord.for_record(
        record,
        reason="handler_error",
        stage="plan",
        workflow="wf",
        attempts=1,
        dead_at_ms=0,
        error=ValueError("x" * 1_000_000),
    )
    assert huge.error_message is not None and len(huge.error_message) <= 4_003
