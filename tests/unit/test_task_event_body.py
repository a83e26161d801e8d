"""The hand-written TaskEvent body path (streams.task_event_body) against fastavro.

Every decode must give what fastavro gives, every restage the bytes fastavro writes, and
anything the hand path does not read exactly (odd encodings, corrupt bytes) must end the
way fastavro's path ends: the same event or the same kind of error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import task_event_body
from streams.errors import SerdeError
from streams.events import TaskEvent, TaskEventCodec, new_task_event
from streams.serde import SchemaStore, StoredSchema
from streams.types import LANES

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW_MS = 1_764_800_000_000


@pytest.fixture(scope="module")
def codec() -> TaskEventCodec:
    return TaskEventCodec(SchemaStore(REPO_SCHEMAS))


def slow_decode(codec: TaskEventCodec, data: bytes) -> TaskEvent:
    """The fastavro path alone: what decode gave before the hand path existed."""
    return TaskEvent.from_avro(codec.serde.decode(data))


def splice_of(decoded: TaskEvent) -> task_event_body.Splice | None:
    return getattr(decoded, "_splice", None)


def event(**overrides: Any) -> TaskEvent:
    base: dict[str, Any] = {
        "workflow": "support",
        "stage": "plan",
        "tenant": "acme",
        "lane": "standard",
        "payload": b'{"q": 1}',
        "now_ms": NOW_MS,
        "deadline_ms": NOW_MS + 30_000,
        "run_id": "run-1",
    }
    base.update(overrides)
    return new_task_event(**base)


def test_the_current_schema_is_the_layout_read_by_hand(codec: TaskEventCodec) -> None:
    # A change to schemas/task_event.avsc turns the hand path off (fastavro alone reads
    # it); this fails so that task_event_body is brought up to the new layout.
    assert codec.serde.schema.fingerprint == task_event_body.BODY_FINGERPRINT
    names = [
        f["name"] for f in json.loads((REPO_SCHEMAS / "task_event.avsc").read_text())["fields"]
    ]
    assert names == [
        "run_id", "workflow", "stage", "tenant", "lane", "priority", "idempotency_key",
        "attempt", "created_at", "enqueued_at", "deadline", "trace_context", "payload",
    ]  # fmt: skip
    assert task_event_body.LANES == LANES


def test_decode_reads_by_hand_and_keeps_where_the_fields_are(codec: TaskEventCodec) -> None:
    original = event(trace_context={"traceparent": "00-ab-cd-01"}, idempotency_key="k1")
    data = codec.encode(original)
    decoded = codec.decode(data)
    assert decoded == original == slow_decode(codec, data)
    splice = splice_of(decoded)
    assert splice is not None and splice[0] is data
    assert dict(decoded.trace_context) == {"traceparent": "00-ab-cd-01"}
    with pytest.raises(TypeError):
        decoded.trace_context["x"] = "y"  # type: ignore[index]


#: Any TaskEvent the schema can carry: every int at its type's edges, any text, any map.
EVENTS = st.builds(
    TaskEvent,
    run_id=st.text(max_size=80),
    workflow=st.just("wf"),
    stage=st.text(max_size=70),
    tenant=st.text(max_size=200),
    lane=st.sampled_from(LANES),
    created_at_ms=st.integers(-(2**63), 2**63 - 1),
    enqueued_at_ms=st.integers(-(2**63), 2**63 - 1) | st.integers(NOW_MS - 10**9, NOW_MS + 10**9),
    payload=st.binary(max_size=3000),
    priority=st.integers(-(2**31), 2**31 - 1),
    idempotency_key=st.none() | st.text(max_size=70),
    attempt=st.integers(-(2**31), 2**31 - 1),
    deadline_ms=st.none() | st.integers(-(2**63), 2**63 - 1),
    trace_context=st.dictionaries(st.text(max_size=10), st.text(max_size=80), max_size=4),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    original=EVENTS,
    new_stage=st.text(max_size=70),
    new_lane=st.none() | st.sampled_from(LANES),
    new_enqueued=st.integers(-(2**63), 2**63 - 1) | st.integers(NOW_MS, NOW_MS + 10**9),
)
def test_decode_and_restage_match_fastavro(
    codec: TaskEventCodec,
    original: TaskEvent,
    new_stage: str,
    new_lane: Any,
    new_enqueued: int,
) -> None:
    data = codec.encode(original)
    decoded = codec.decode(data)
    assert decoded == slow_decode(codec, data) == original
    assert splice_of(decoded) is not None, "valid current-schema bytes take the hand path"
    restaged = codec.encode_for_stage(decoded, new_stage, new_enqueued, new_lane)
    expected = codec.serde.encode(original.staged_avro(new_stage, new_enqueued, new_lane))
    assert restaged == expected
    # with_stage keeps the splice; restaging that copy rewrites what it changed.
    moved = decoded.with_stage(new_stage, new_enqueued)
    assert codec.encode_for_stage(moved, "next", NOW_MS) == codec.serde.encode(
        moved.staged_avro("next", NOW_MS)
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=4),
    tail=st.binary(max_size=3),
    trace=st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    key=st.none() | st.text(max_size=5),
)
def test_corrupt_bytes_end_as_fastavro_ends(
    codec: TaskEventCodec,
    cut: int,
    flips: list[tuple[int, int]],
    tail: bytes,
    trace: dict[str, str],
    key: str | None,
) -> None:
    data = bytearray(
        codec.encode(event(payload=b"p" * 40, trace_context=trace, idempotency_key=key))
    )
    for at, value in flips:
        if 10 <= at < len(data):  # the header is serde's, tested there
            data[at] = value
    mangled = bytes(data[: len(data) - cut] if cut else data) + tail
    try:
        expected: TaskEvent | type[Exception] = slow_decode(codec, mangled)
    except SerdeError as exc:  # DecodeError, or UnknownSchema once the header is cut into
        expected = type(exc)
    try:
        got: TaskEvent | type[Exception] = codec.decode(mangled)
    except SerdeError as exc:
        got = type(exc)
    assert got == expected


def avro_long(value: int) -> bytes:
    return task_event_body._zigzag(value)


def test_a_map_in_blocks_with_sizes_is_left_to_fastavro(codec: TaskEventCodec) -> None:
    # The spec lets a writer give a block's byte size with a negative count; fastavro
    # reads it, the hand path does not, so decode must still give the event.
    plain = codec.encode(event(trace_context={"a": "b"}, payload=b"xy"))
    entry = avro_long(1) + b"a" + avro_long(1) + b"b"
    one_block = avro_long(1) + entry + avro_long(0)
    assert one_block in plain
    sized = avro_long(-1) + avro_long(len(entry)) + entry + avro_long(0)
    data = plain.replace(one_block, sized)
    assert task_event_body.read_body(data, 10) is None
    decoded = codec.decode(data)
    assert dict(decoded.trace_context) == {"a": "b"} and splice_of(decoded) is None


def test_the_splice_is_no_field_of_the_event(codec: TaskEventCodec) -> None:
    # Users see the fields they wrote: fields, replace and repr carry no wire positions.
    decoded = codec.decode(codec.encode(event()))
    assert splice_of(decoded) is not None
    assert "_splice" not in {f.name for f in dataclasses.fields(TaskEvent)}
    assert "_splice" not in repr(decoded)


def test_a_replaced_event_is_encoded_from_its_fields(codec: TaskEventCodec) -> None:
    decoded = codec.decode(codec.encode(event(payload=b"before")))
    changed = dataclasses.replace(decoded, payload=b"after", tenant="other")
    assert splice_of(changed) is None
    out = codec.decode(codec.encode_for_stage(changed, "act", NOW_MS + 5))
    assert (out.payload, out.tenant, out.stage) == (b"after", "other", "act")


def test_restaging_checks_what_it_writes(codec: TaskEventCodec) -> None:
    decoded = codec.decode(codec.encode(event()))
    with pytest.raises(SerdeError, match="'lane'"):
        codec.encode_for_stage(decoded, "act", NOW_MS, "asap")  # type: ignore[arg-type]
    with pytest.raises(SerdeError):
        codec.encode_for_stage(decoded, "act", 2**63)
    with pytest.raises(SerdeError):
        codec.encode_for_stage(decoded, 7, NOW_MS)  # type: ignore[arg-type]


class FixedIds:
    """A schema registry's answers from a dict (the registry client is tested elsewhere)."""

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}

    def id_for_topic(self, topic: str, schema: StoredSchema) -> int:
        self.texts[41] = schema.path.read_text()
        return 41

    def schema_text(self, schema_id: int) -> str:
        return self.texts[schema_id]


def test_registry_framed_records_take_the_hand_path_too() -> None:
    framed = TaskEventCodec(SchemaStore(REPO_SCHEMAS, registry=FixedIds()))
    data = framed.encode(event(), topic="support.plan")
    assert data[0] == 0  # the Confluent wire format
    decoded = framed.decode(data)
    assert decoded == event() and splice_of(decoded) is not None
    out = framed.encode_for_stage(decoded, "act", NOW_MS + 1, topic="support.act")
    assert out == framed.serde.encode(decoded.staged_avro("act", NOW_MS + 1), topic="support.act")


def test_another_current_schema_is_read_by_fastavro_alone(tmp_path: Path) -> None:
    raw = json.loads((REPO_SCHEMAS / "task_event.avsc").read_text())
    raw["fields"].append({"name": "extra", "type": "string", "default": ""})
    (tmp_path / "task_event.avsc").write_text(json.dumps(raw))
    codec = TaskEventCodec(SchemaStore(tmp_path))
    decoded = codec.decode(codec.encode(event()))
    assert decoded == event() and splice_of(decoded) is None


def test_a_varint_wider_than_64_bits_ends_as_fastavro_ends(codec: TaskEventCodec) -> None:
    # Ten bytes can carry 70 bits; fastavro keeps 64 of them. Found by fuzzing: the hand
    # path read the whole 70-bit number.
    original = event(deadline_ms=-1)
    data = codec.encode(original)
    deadline = avro_long(-1)
    at = data.index(b"\x02" + deadline + b"\x00", 10) + 1  # union branch 1, then the long
    wide = bytes([0xFF] * 9 + [0x7F])
    mangled = data[:at] + wide + data[at + len(deadline) :]
    assert task_event_body.read_body(mangled, 10) is None
    assert codec.decode(mangled) == slow_decode(codec, mangled)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(original=EVENTS)
def test_encoding_by_hand_writes_the_bytes_fastavro_writes(
    codec: TaskEventCodec, original: TaskEvent
) -> None:
    header = codec.serde.header_for(None)
    by_hand = task_event_body.encoded_body(header, *_fields_of(original))
    assert by_hand is not None
    assert by_hand == codec.serde.encode(original.to_avro()) == codec.encode(original)
    # An event with no splice (built, or replaced) is restaged by hand from its fields too.
    staged = codec.encode_for_stage(original, "next", NOW_MS, "urgent")
    assert staged == codec.serde.encode(original.staged_avro("next", NOW_MS, "urgent"))


def _fields_of(e: TaskEvent) -> tuple[Any, ...]:
    return (
        e.run_id, e.workflow, e.stage, e.tenant, e.lane, e.priority, e.idempotency_key,
        e.attempt, e.created_at_ms, e.enqueued_at_ms, e.deadline_ms, e.trace_context, e.payload,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"priority": 2**31},
        {"attempt": -(2**31) - 1},
        {"priority": True},
        {"created_at_ms": 2**63},
        {"deadline_ms": 1.5},
        {"run_id": 7},
        {"tenant": "\ud800"},  # a lone surrogate: no UTF-8 for it
        {"lane": "asap"},
        {"idempotency_key": b"k"},
        {"trace_context": {"k": 1}},
        {"payload": "text"},
        {"payload": bytearray(b"x")},
    ],
)
def test_what_the_hand_encoder_does_not_write_exactly_ends_as_fastavro_ends(
    codec: TaskEventCodec, change: dict[str, Any]
) -> None:
    bad = dataclasses.replace(event(), **change)
    header = codec.serde.header_for(None)
    assert task_event_body.encoded_body(header, *_fields_of(bad)) is None
    try:
        expected: bytes | type[BaseException] = codec.serde.encode(bad.to_avro())
    except SerdeError:
        expected = SerdeError
    if expected is SerdeError:
        with pytest.raises(SerdeError):
            codec.encode(bad)
    else:
        assert codec.encode(bad) == expected
