"""The Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body),
checked against its documented layout and the Avro spec's published encoding, and the
serde's choice of format: single-object by default, Confluent with a registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.errors import DecodeError
from streams.events import TaskEventCodec, new_task_event
from streams.registry import wire
from streams.serde import SchemaStore, Serde, StoredSchema

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
# Avro specification, "Binary encoding" example: record test {a: long, b: string} with
# a=27, b="foo" is 36 06 66 6f 6f (zig-zag 27 = 0x36; string length 3 = 0x06, then "foo").
SPEC_SCHEMA = {
    "type": "record",
    "name": "test",
    "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}],
}
SPEC_BODY = bytes.fromhex("36 06 66 6f 6f")


class FixedIds:
    """SchemaIds answering from a dict, recording what was asked."""

    def __init__(self, schema_id: int, texts: dict[int, str] | None = None) -> None:
        self.schema_id = schema_id
        self.texts = texts or {}
        self.topics: list[str] = []

    def id_for_topic(self, topic: str, schema: StoredSchema) -> int:
        self.topics.append(topic)
        self.texts.setdefault(self.schema_id, schema.path.read_text())
        return self.schema_id

    def schema_text(self, schema_id: int) -> str:
        return self.texts[schema_id]


def spec_store(tmp_path: Path, registry: FixedIds | None) -> SchemaStore:
    (tmp_path / "test.avsc").write_text(json.dumps(SPEC_SCHEMA))
    return SchemaStore(tmp_path, registry=registry)


def test_frame_is_magic_byte_then_big_endian_id() -> None:
    assert wire.frame(1, b"") == bytes.fromhex("00 00 00 00 01")
    assert wire.frame(0x01020304, b"\xff") == bytes.fromhex("00 01 02 03 04 ff")
    assert wire.schema_id_of(bytes.fromhex("00 00 00 01 00 36")) == 256
    with pytest.raises(ValueError, match="outside"):
        wire.frame(2**31, b"")
    with pytest.raises(DecodeError, match="magic byte 00"):
        wire.schema_id_of(bytes.fromhex("c3 01 00 00 00"))


def test_spec_example_framed_with_registry_id(tmp_path: Path) -> None:
    ids = FixedIds(1)
    serde = Serde(spec_store(tmp_path, ids), "test")
    data = serde.encode({"a": 27, "b": "foo"}, topic="orders")
    assert data == bytes.fromhex("00 00 00 00 01") + SPEC_BODY
    assert ids.topics == ["orders"]
    assert serde.decode(data) == {"a": 27, "b": "foo"}


def test_default_is_single_object_even_with_a_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMS_SCHEMA_REGISTRY_URL", raising=False)
    store = spec_store(tmp_path, None)
    assert store.registry is None
    data = Serde(store, "test").encode({"a": 27, "b": "foo"}, topic="orders")
    assert data[:2] == b"\xc3\x01" and data[10:] == SPEC_BODY


def test_writer_without_topic_stays_single_object(tmp_path: Path) -> None:
    data = Serde(spec_store(tmp_path, FixedIds(1)), "test").encode({"a": 27, "b": "foo"})
    assert data[:2] == b"\xc3\x01"


def test_reader_accepts_both_formats_and_resolves_unknown_ids(tmp_path: Path) -> None:
    # The writer's schema (id 7) is not in the reader's schemas/: an older version without
    # field b would not even parse here; the registry supplies it.
    old = {"type": "record", "name": "test", "fields": [{"name": "a", "type": "long"}]}
    new = {
        "type": "record",
        "name": "test",
        "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": "string", "default": "none"},
        ],
    }
    (tmp_path / "test.avsc").write_text(json.dumps(new))
    ids = FixedIds(3, {7: json.dumps(old)})
    serde = Serde(SchemaStore(tmp_path, registry=ids), "test")
    assert serde.decode(bytes.fromhex("00 00 00 00 07 36")) == {"a": 27, "b": "none"}
    single = Serde(SchemaStore(tmp_path, registry=None), "test").encode({"a": 1, "b": "x"})
    assert serde.decode(single) == {"a": 1, "b": "x"}


def test_framed_record_without_registry_says_what_to_set(tmp_path: Path) -> None:
    serde = Serde(spec_store(tmp_path, None), "test")
    with pytest.raises(DecodeError, match="STREAMS_SCHEMA_REGISTRY_URL"):
        serde.decode(bytes.fromhex("00 00 00 00 01") + SPEC_BODY)


def test_framed_record_of_another_schema_is_a_decode_error(tmp_path: Path) -> None:
    other = {"type": "record", "name": "other", "fields": [{"name": "a", "type": "long"}]}
    serde = Serde(spec_store(tmp_path, FixedIds(1, {9: json.dumps(other)})), "test")
    with pytest.raises(DecodeError, match="other"):
        serde.decode(bytes.fromhex("00 00 00 00 09 36"))


def test_task_event_codec_frames_per_topic() -> None:
    store = SchemaStore(REPO_SCHEMAS, registry=FixedIds(42))
    codec = TaskEventCodec(store)
    event = new_task_event(
        workflow="support", stage="triage", tenant="t", lane="standard", payload=b"{}", now_ms=1
    )
    data = codec.encode(event, topic="support.triage.standard")
    assert data[:5] == bytes.fromhex("00 00 00 00 2a")
    assert codec.decode(data) == event
    assert codec.decode(codec.encode(event)) == event  # no topic: single-object
