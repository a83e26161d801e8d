"""Wire format, schema evolution and error mapping of streams.serde."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import ConfigError, DecodeError, SerdeError, UnknownSchema
from streams.serde import SCHEMAS_DIR_ENV, PayloadSchema, SchemaStore, Serde, default_schemas_dir

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TASK_EVENT = "dev.streams.TaskEvent"
DEAD_LETTER = "dev.streams.DeadLetter"

# Parsing Canonical Form of schemas/history/task_event.v1.avsc, written out by hand from the
# spec's rules (full names; only name/type/fields/symbols; no doc, default or logicalType).
V1_CANONICAL_FORM = (
    '{"name":"dev.streams.TaskEvent","type":"record","fields":['
    '{"name":"run_id","type":"string"},'
    '{"name":"workflow","type":"string"},'
    '{"name":"stage","type":"string"},'
    '{"name":"tenant","type":"string"},'
    '{"name":"lane","type":{"name":"dev.streams.Lane","type":"enum",'
    '"symbols":["urgent","standard","background"]}},'
    '{"name":"idempotency_key","type":["null","string"]},'
    '{"name":"attempt","type":"int"},'
    '{"name":"created_at","type":"long"},'
    '{"name":"enqueued_at","type":"long"},'
    '{"name":"deadline","type":["null","long"]},'
    '{"name":"payload","type":"bytes"}]}'
)


def rabin_fingerprint(data: bytes) -> bytes:
    """CRC-64-AVRO exactly as the Avro specification's reference code, little-endian bytes."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def task_event(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "run_id": "0f8e2d1c4b3a59687766554433221100",
        "workflow": "support",
        "stage": "triage",
        "tenant": "acme",
        "lane": "urgent",
        "priority": 3,
        "idempotency_key": "ticket-42",
        "attempt": 1,
        "created_at": 1_700_000_000_000,
        "enqueued_at": 1_700_000_000_250,
        "deadline": 1_700_000_060_000,
        "trace_context": {"traceparent": "00-4bf92f3577b34da6-00f067aa0ba902b7-01"},
        "payload": b'{"question": "why?"}',
    }
    record.update(overrides)
    return record


def dead_letter() -> dict[str, Any]:
    return {
        "original_topic": "support.triage.urgent",
        "original_partition": 3,
        "original_offset": 2**40,
        "original_timestamp": 1_700_000_000_000,
        "original_key": b"run-1",
        "raw_value": None,
        "original_headers": [
            {"key": "traceparent", "value": b"00-ab"},
            {"key": "x", "value": None},
        ],
        "reason": "decode_error",
        "error_type": "streams.errors.DecodeError",
        "error_message": "not Avro",
        "stage": "triage",
        "workflow": "support",
        "attempts": 0,
        "dead_at": 1_700_000_001_000,
    }


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore(REPO_SCHEMAS)


@pytest.fixture(scope="module")
def serde(store: SchemaStore) -> Serde:
    return Serde(store, TASK_EVENT)


@pytest.fixture(scope="module")
def v1_serde(tmp_path_factory: pytest.TempPathFactory) -> Serde:
    """Writes records the way a producer still on schema v1 does."""
    old = tmp_path_factory.mktemp("v1-schemas")
    shutil.copy(REPO_SCHEMAS / "history" / "task_event.v1.avsc", old / "task_event.avsc")
    return Serde(SchemaStore(old), TASK_EVENT)


# --- round trip -------------------------------------------------------------------------


def test_task_event_round_trips(serde: Serde) -> None:
    record = task_event()
    assert serde.decode(serde.encode(record)) == record


def test_nullable_fields_round_trip_as_none(serde: Serde) -> None:
    record = task_event(idempotency_key=None, deadline=None, trace_context={})
    assert serde.decode(serde.encode(record)) == record


def test_fields_with_defaults_may_be_omitted(serde: Serde) -> None:
    record = task_event()
    for name in ("priority", "idempotency_key", "attempt", "deadline", "trace_context"):
        del record[name]
    decoded = serde.decode(serde.encode(record))
    assert decoded["priority"] == 0
    assert decoded["attempt"] == 0
    assert decoded["idempotency_key"] is None
    assert decoded["deadline"] is None
    assert decoded["trace_context"] == {}


def test_dead_letter_round_trips(store: SchemaStore) -> None:
    serde = Serde(store, DEAD_LETTER)
    assert serde.decode(serde.encode(dead_letter())) == dead_letter()


def test_timestamps_stay_int_millis(serde: Serde) -> None:
    decoded = serde.decode(serde.encode(task_event()))
    assert type(decoded["created_at"]) is int
    assert type(decoded["deadline"]) is int


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.binary(max_size=4096),
    text=st.text(max_size=200),
    trace=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
    priority=st.integers(-(2**31), 2**31 - 1),
    deadline=st.none() | st.integers(-(2**63), 2**63 - 1),
)
def test_round_trip_property(
    serde: Serde,
    payload: bytes,
    text: str,
    trace: dict[str, str],
    priority: int,
    deadline: int | None,
) -> None:
    record = task_event(
        payload=payload,
        run_id=text,
        tenant=text,
        idempotency_key=text,
        trace_context=trace,
        priority=priority,
        deadline=deadline,
    )
    assert serde.decode(serde.encode(record)) == record


# --- wire format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "published"),
    [
        ('"int"', "8f5c393f1ad57572"),
        ('"long"', "b71df49344e154d0"),
        ('"bytes"', "651920c3da16c04f"),
    ],
)
def test_reference_rabin_matches_published_fingerprints(schema: str, published: str) -> None:
    # Values from the Apache Avro test suites (Python, Rust), as little-endian wire bytes.
    assert rabin_fingerprint(schema.encode()).hex() == published


def test_header_is_marker_then_fingerprint_of_canonical_form(
    serde: Serde, store: SchemaStore
) -> None:
    data = serde.encode(task_event())
    assert data[:2] == b"\xc3\x01"
    current = store.current(TASK_EVENT)
    assert "doc" not in current.canonical_form
    assert "logicalType" not in current.canonical_form
    assert data[2:10] == rabin_fingerprint(current.canonical_form.encode())


def test_history_schema_fingerprint_matches_hand_written_canonical_form(
    store: SchemaStore, v1_serde: Serde
) -> None:
    fingerprint = rabin_fingerprint(V1_CANONICAL_FORM.encode())
    stored = store.by_fingerprint(fingerprint)
    assert stored.path == REPO_SCHEMAS / "history" / "task_event.v1.avsc"
    assert not stored.is_current
    assert stored.canonical_form == V1_CANONICAL_FORM
    v1_record = task_event()
    del v1_record["priority"], v1_record["trace_context"]
    assert v1_serde.encode(v1_record)[2:10] == fingerprint


def test_current_and_history_fingerprints_differ(store: SchemaStore) -> None:
    task_events = [s for s in store.schemas if s.name == TASK_EVENT]
    assert len({s.fingerprint for s in task_events}) == 2
    assert [s.is_current for s in task_events].count(True) == 1


# --- schema evolution -------------------------------------------------------------------


def test_v1_record_decodes_with_v2_defaults(serde: Serde, v1_serde: Serde) -> None:
    v1_record = task_event()
    del v1_record["priority"], v1_record["trace_context"]
    decoded = serde.decode(v1_serde.encode(v1_record))
    assert decoded == {**v1_record, "priority": 0, "trace_context": {}}


def test_v1_defaults_are_not_shared_between_decodes(serde: Serde, v1_serde: Serde) -> None:
    v1_record = task_event()
    del v1_record["priority"], v1_record["trace_context"]
    data = v1_serde.encode(v1_record)
    serde.decode(data)["trace_context"]["leak"] = "yes"
    assert serde.decode(data)["trace_context"] == {}


# --- decode errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc3",
        b"\xc3\x01\x00\x00",
        b'{"run_id": "x"}',
        b"\x00\x00\x00\x00\x07rest-of-a-confluent-framed-record",
        b"\xc3\x02" + b"\x00" * 20,
    ],
)
def test_not_single_object_encoding_raises_decode_error(serde: Serde, data: bytes) -> None:
    with pytest.raises(DecodeError, match="not Avro single-object encoding: expected marker c3 01"):
        serde.decode(data)


def test_unknown_fingerprint_raises_unknown_schema(serde: Serde) -> None:
    data = bytearray(serde.encode(task_event()))
    data[2:10] = bytes.fromhex("0123456789abcdef")
    with pytest.raises(UnknownSchema) as raised:
        serde.decode(bytes(data))
    message = str(raised.value)
    assert "0123456789abcdef" in message
    assert TASK_EVENT in message and DEAD_LETTER in message
    assert isinstance(raised.value, SerdeError)


def test_record_of_another_type_raises_decode_error(store: SchemaStore, serde: Serde) -> None:
    data = Serde(store, DEAD_LETTER).encode(dead_letter())
    with pytest.raises(DecodeError, match="DeadLetter"):
        serde.decode(data)


def test_every_truncation_raises_decode_error(serde: Serde) -> None:
    data = serde.encode(task_event())
    for length in range(len(data)):
        with pytest.raises(DecodeError):
            serde.decode(data[:length])


def test_trailing_bytes_raise_decode_error(serde: Serde) -> None:
    with pytest.raises(DecodeError, match="1 bytes left"):
        serde.decode(serde.encode(task_event()) + b"\x00")


def test_decode_error_chains_the_cause(serde: Serde) -> None:
    data = serde.encode(task_event())
    with pytest.raises(DecodeError) as raised:
        serde.decode(data[:-3])
    assert raised.value.__cause__ is not None


@settings(max_examples=300)
@given(body=st.binary(max_size=300))
def test_garbage_body_decodes_or_raises_decode_error(body: bytes) -> None:
    serde = Serde(SchemaStore(REPO_SCHEMAS), TASK_EVENT)
    data = serde.encode(task_event())[:10] + body
    try:
        decoded = serde.decode(data)
    except DecodeError:
        return
    assert set(decoded) == set(task_event())


@settings(max_examples=300)
@given(data=st.data())
def test_flipped_byte_decodes_or_raises_decode_error(data: st.DataObject) -> None:
    serde = Serde(SchemaStore(REPO_SCHEMAS), TASK_EVENT)
    encoded = bytearray(serde.encode(task_event()))
    index = data.draw(st.integers(10, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    # Any outcome but an exception other than DecodeError is fine.
    with contextlib.suppress(DecodeError):
        serde.decode(bytes(encoded))


# --- encode errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field", "detail"),
    [
        ({k: v for k, v in task_event().items() if k != "stage"}, "stage", "missing"),
        (task_event(lane="asap"), "lane", "one of urgent, standard, background"),
        (task_event(payload="text, not bytes"), "payload", "bytes"),
        (task_event(run_id=None), "run_id", "string"),
        (task_event(attempt="1"), "attempt", "integer"),
        (task_event(priority=2**31), "priority", "integer in"),
        (task_event(attempt=True), "attempt", "integer"),
        (task_event(created_at=1.7e12), "created_at", "integer"),
        (task_event(deadline=2**63), "deadline", "integer"),
        (task_event(trace_context={"k": 1}), "trace_context", "string"),
        (task_event(priorty=1), "priorty", "unknown field"),
    ],
)
def test_encode_error_names_the_field(
    serde: Serde, record: dict[str, Any], field: str, detail: str
) -> None:
    with pytest.raises(SerdeError) as raised:
        serde.encode(record)
    assert not isinstance(raised.value, DecodeError)
    assert f"'{field}'" in str(raised.value)
    assert detail in str(raised.value)


def test_encode_error_does_not_dump_the_payload(serde: Serde) -> None:
    with pytest.raises(SerdeError) as raised:
        serde.encode(task_event(payload="x" * 100_000))
    assert len(str(raised.value)) < 300


def test_encode_rejects_a_non_mapping(serde: Serde) -> None:
    with pytest.raises(SerdeError, match="expected a dict"):
        serde.encode([1, 2])  # type: ignore[arg-type]


# --- schema store -----------------------------------------------------------------------


def test_store_finds_schemas_by_short_name(store: SchemaStore) -> None:
    assert store.current("TaskEvent").name == TASK_EVENT


def test_store_rejects_unknown_name(store: SchemaStore) -> None:
    with pytest.raises(UnknownSchema, match=r"'Nope'.*dev\.streams\.TaskEvent"):
        store.current("Nope")


def test_store_rejects_two_current_versions(tmp_path: Path) -> None:
    shutil.copy(REPO_SCHEMAS / "task_event.avsc", tmp_path / "a.avsc")
    shutil.copy(REPO_SCHEMAS / "history" / "task_event.v1.avsc", tmp_path / "b.avsc")
    with pytest.raises(SerdeError, match="already defined"):
        SchemaStore(tmp_path)


def test_store_names_an_invalid_file(tmp_path: Path) -> None:
    (tmp_path / "broken.avsc").write_text('{"type": "record", "name": "X", "fields": [')
    with pytest.raises(SerdeError, match="broken.avsc"):
        SchemaStore(tmp_path)


def test_store_names_a_schema_with_an_unknown_type(tmp_path: Path) -> None:
    (tmp_path / "bad.avsc").write_text(
        '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}'
    )
    with pytest.raises(SerdeError, match="bad.avsc"):
        SchemaStore(tmp_path)


def test_store_rejects_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(SerdeError, match=r"no \.avsc files"):
        SchemaStore(tmp_path)


def test_default_schemas_dir_is_the_repo_schemas() -> None:
    assert default_schemas_dir({}) == REPO_SCHEMAS


def test_default_schemas_dir_honours_the_environment(tmp_path: Path) -> None:
    assert default_schemas_dir({SCHEMAS_DIR_ENV: str(tmp_path)}) == tmp_path.resolve()


def test_default_schemas_dir_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=SCHEMAS_DIR_ENV):
        default_schemas_dir({SCHEMAS_DIR_ENV: str(tmp_path / "missing")})


def test_a_payload_nested_too_deep_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    schema = tmp_path / "run.avsc"
    schema.write_text(
        '{"type": "record", "name": "Run", "fields": [{"name": "x", "type": "string"}]}'
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    problem = PayloadSchema(schema).problem_with_json(deep)
    assert problem is not None and "nested too deep" in problem
