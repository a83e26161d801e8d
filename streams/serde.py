"""Avro encoding of records, with schemas loaded from local .avsc files.

Owns the wire format and schema evolution; the only module that imports fastavro. Must not
know what a record means (that is streams.events) nor talk to Kafka or a schema registry
itself (a store may carry ``SchemaIds``, which streams.registry implements over HTTP).

Default wire format (Avro spec, "Single object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
            8 bytes little-endian | Avro binary body

With a schema registry configured (the store carries ``SchemaIds``), a writer that names
the topic writes the Confluent wire format instead (streams.registry.wire)::

    00 | schema id, 4 bytes big-endian | Avro binary body

Readers accept both, whatever is configured, deciding by the first byte (C3 or 00), so a
topic can move from one to the other with records of both kinds in it.

Values cross this boundary as Avro primitives: logical types are stripped before fastavro
sees a schema, so timestamp-millis is an ``int`` of milliseconds both ways, never a datetime.
The canonical form, and so the fingerprint, ignores logical types, so this changes no byte.
"""

from __future__ import annotations

import copy
import io
import json
import os
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import SchemaParseException, parse_schema, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.validation import ValidationError, validate

from streams.errors import ConfigError, DecodeError, SerdeError, UnknownSchema
from streams.registry import wire

__all__ = [
    "SCHEMAS_DIR_ENV",
    "PayloadSchema",
    "SchemaIds",
    "SchemaStore",
    "Serde",
    "StoredSchema",
    "default_schemas_dir",
]

SCHEMAS_DIR_ENV = "STREAMS_SCHEMAS_DIR"

_MARKER = b"\xc3\x01"
_FINGERPRINT_LEN = 8
_HEADER_LEN = len(_MARKER) + _FINGERPRINT_LEN
_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60


def default_schemas_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding the .avsc files: ``$STREAMS_SCHEMAS_DIR``, else the repo's schemas/.

    ``environ`` defaults to ``os.environ``; config code may pass its own mapping.
    Raises ConfigError if the variable names no directory, SerdeError if schemas/ is missing
    (a non-editable install ships no schemas: set the variable).
    """
    env = os.environ if environ is None else environ
    override = env.get(SCHEMAS_DIR_ENV)
    if override:
        path = Path(override).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(SCHEMAS_DIR_ENV, "", f"{path} is not a directory of .avsc files")
        return path
    # The package is installed editable, so schemas/ sits next to the package directory.
    path = Path(__file__).resolve().parent.parent / "schemas"
    if not path.is_dir():
        raise SerdeError(
            f"no schemas directory at {path}: set {SCHEMAS_DIR_ENV} to the repo's schemas/"
        )
    return path


@dataclass(frozen=True, slots=True)
class StoredSchema:
    """One loaded .avsc file.

    ``fingerprint`` is the 8 bytes exactly as they appear on the wire. ``is_current`` is
    False for files in a subdirectory (e.g. history/): those only read old records.
    """

    name: str
    fingerprint: bytes
    path: Path
    is_current: bool
    canonical_form: str = field(repr=False)

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    def __str__(self) -> str:
        return f"{self.name}@{self.fingerprint_hex}"


class SchemaIds(Protocol):
    """Schema ids of a schema registry (streams.registry.RegistryIds implements it).

    Both may block on the network the first time for a given key, then answer from a cache;
    they raise SerdeError (streams.registry.RegistryError) when the registry cannot answer.
    """

    def id_for_topic(self, topic: str, schema: StoredSchema) -> int:
        """The id of ``schema`` under ``topic``'s subject, registering it if needed."""
        ...

    def schema_text(self, schema_id: int) -> str:
        """The schema (JSON text) the registry holds under ``schema_id``."""
        ...


class SchemaStore:
    """Every .avsc under a directory, parsed once and indexed by fingerprint and name.

    Top-level files are the current schemas (one per record name); files in subdirectories
    such as history/ are older versions kept so records written with them still decode.
    Each file must be self-contained (no references to types defined in other files).
    Immutable after construction, so one store may be shared across threads.

    ``registry``: schema ids of a schema registry; when given, writers that name the topic
    use the Confluent wire format. Default: the registry configured by
    ``STREAMS_SCHEMA_REGISTRY_URL`` (streams.registry.configured_ids), else none.
    """

    def __init__(
        self, schemas_dir: Path | str | None = None, *, registry: SchemaIds | None = None
    ) -> None:
        directory = default_schemas_dir() if schemas_dir is None else Path(schemas_dir)
        self.directory = directory
        if registry is None:
            from streams.registry.ids import configured_ids

            registry = configured_ids()
        self.registry = registry
        self._by_fingerprint: dict[bytes, StoredSchema] = {}
        self._current: dict[str, StoredSchema] = {}
        self._parsed: dict[bytes, Any] = {}
        paths = sorted(directory.rglob("*.avsc"))
        if not paths:
            raise SerdeError(
                f"no .avsc files under {directory}: point {SCHEMAS_DIR_ENV} at the repo's schemas/"
            )
        # Current files first, so a history copy identical to the current schema maps to it.
        for path in sorted(paths, key=lambda p: p.parent != directory):
            self._load(path, is_current=path.parent == directory)

    def _load(self, path: Path, *, is_current: bool) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            canonical_form = to_parsing_canonical_form(raw)
            # Own named-types dict per file: v1 and v2 of TaskEvent define the same names.
            parsed = parse_schema(_strip_logical_types(raw), {})
        except (OSError, ValueError, TypeError, KeyError, SchemaParseException) as exc:
            raise SerdeError(f"{path}: not a valid Avro schema: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise SerdeError(f"{path}: top-level type must be a record")
        fingerprint = bytes.fromhex(_fastavro_fingerprint(canonical_form, "CRC-64-AVRO"))
        schema = StoredSchema(parsed["name"], fingerprint, path, is_current, canonical_form)
        if is_current:
            if schema.name in self._current:
                other = self._current[schema.name].path
                raise SerdeError(
                    f"{path}: {schema.name} is already defined by {other}; "
                    "move the older one to history/"
                )
            self._current[schema.name] = schema
        self._by_fingerprint.setdefault(fingerprint, schema)
        self._parsed.setdefault(fingerprint, parsed)

    @property
    def schemas(self) -> tuple[StoredSchema, ...]:
        return tuple(self._by_fingerprint.values())

    def current(self, name: str) -> StoredSchema:
        """The current schema for a full (``dev.streams.TaskEvent``) or unique short name."""
        found = self._current.get(name)
        if found is None:
            matches = [s for s in self._current.values() if s.name.rsplit(".", 1)[-1] == name]
            if len(matches) == 1:
                found = matches[0]
        if found is None:
            known = ", ".join(sorted(self._current)) or "none"
            raise UnknownSchema(
                f"no current schema named {name!r} in {self.directory} (current: {known})"
            )
        return found

    def by_fingerprint(self, fingerprint: bytes) -> StoredSchema:
        found = self._by_fingerprint.get(fingerprint)
        if found is None:
            known = ", ".join(str(s) for s in self._by_fingerprint.values())
            raise UnknownSchema(
                f"unknown schema fingerprint {fingerprint.hex()}: {self.directory} holds {known}; "
                "the writer may use a newer schema: add its .avsc to schemas/history/"
            )
        return found

    def _parsed_schema(self, fingerprint: bytes) -> Any:
        return self._parsed[fingerprint]


class Serde:
    """Encodes dicts with one current schema; decodes any known version of that record.

    ``encode`` raises SerdeError naming the offending field. ``decode`` raises DecodeError
    for bytes that are neither single-object encoded nor Confluent-framed, or whose body is
    corrupt or truncated, and UnknownSchema for a fingerprint the store does not hold.
    Thread-safe. Without a registry it never blocks; with one, the first encode for a topic
    and the first decode of an unknown schema id ask the registry (then cached).
    """

    def __init__(self, store: SchemaStore, writer_schema_name: str) -> None:
        self.schema = store.current(writer_schema_name)
        self._store = store
        self._parsed = store._parsed_schema(self.schema.fingerprint)
        self._header = _MARKER + self.schema.fingerprint
        self._int_fields = _int_field_ranges(self._parsed)
        # fastavro hands out the reader schema's own default object for a field the writer
        # lacked; a caller mutating that dict would change every later decode, so copy them.
        self._mutable_defaults = tuple(
            (f["name"], f["default"])
            for f in self._parsed["fields"]
            if isinstance(f.get("default"), dict | list)
        )
        self._ids = store.registry
        # Registry schema id -> (writer schema, reader schema or None), filled on first sight.
        self._id_readers: dict[int, tuple[Any, Any]] = {}
        # writer fingerprint -> (writer schema, reader schema or None when they are the same)
        self._readers: dict[bytes, tuple[Any, Any]] = {}
        for stored in store.schemas:
            if stored.name != self.schema.name:
                continue
            same = stored.fingerprint == self.schema.fingerprint
            writer = store._parsed_schema(stored.fingerprint)
            self._readers[stored.fingerprint] = (writer, None if same else self._parsed)

    def encode(self, obj: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        """Single-object encoded bytes; Confluent-framed when the store has a registry and
        ``topic`` is given (the subject is the topic's, so the writer must name it)."""
        # fastavro silently writes out-of-range, float and bool values into int fields, which
        # other readers then misread; checking the top-level ones is cheap.
        if type(obj) is not dict and not isinstance(obj, Mapping):
            raise SerdeError(
                f"cannot encode {self.schema.name}: expected a dict, got {type(obj).__name__}"
            )
        for name, low, high in self._int_fields:
            value = obj.get(name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
            ):
                raise SerdeError(
                    f"cannot encode {self.schema.name}: field {name!r} is "
                    f"{_short_repr.repr(value)}, expected an integer in [{low}, {high}]"
                )
        buffer = io.BytesIO()
        buffer.write(self.header_for(topic))
        try:
            # strict_allow_default rejects unknown keys, so a misspelt field is not dropped.
            fastavro.schemaless_writer(buffer, self._parsed, obj, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError, TypeError, AttributeError ...
            raise SerdeError(
                f"cannot encode {self.schema.name}: {self._diagnose(obj, exc)}"
            ) from exc
        return buffer.getvalue()

    def header_for(self, topic: str | None) -> bytes:
        """What ``encode`` writes before the body: the Confluent frame when the store has a
        registry and ``topic`` is given, else the single-object header."""
        if self._ids is not None and topic is not None:
            return wire.frame(self._ids.id_for_topic(topic, self.schema), b"")
        return self._header

    def current_body_start(self, data: bytes) -> int | None:
        """Where the Avro body of ``data`` starts if it was written with the current
        schema, else None (``decode`` reads it, or says why it cannot). Raises what
        ``decode`` raises for a registry id it cannot look up."""
        if data[:_HEADER_LEN] == self._header:
            return _HEADER_LEN
        if wire.is_confluent_framed(data):
            _, reader = self._registry_schemas(wire.schema_id_of(data))
            return wire.HEADER_LEN if reader is None else None
        return None

    def decode(self, data: bytes) -> dict[str, Any]:
        if wire.is_confluent_framed(data):
            schema_id = wire.schema_id_of(data)
            writer, reader = self._registry_schemas(schema_id)
            return self._read_body(data, wire.HEADER_LEN, writer, reader, f"id {schema_id}")
        if len(data) < _HEADER_LEN or data[:2] != _MARKER:
            raise DecodeError(
                "not Avro single-object encoding: expected marker c3 01 and an 8-byte "
                "fingerprint (or the Confluent wire format: 00 and a 4-byte schema id), got "
                f"{len(data)} bytes starting {bytes(data[:_HEADER_LEN]).hex(' ') or '(empty)'}"
            )
        fingerprint = bytes(data[2:_HEADER_LEN])
        schemas = self._readers.get(fingerprint)
        if schemas is None:
            other = self._store.by_fingerprint(fingerprint)  # raises UnknownSchema if unknown
            raise DecodeError(f"record is a {other}, this serde reads {self.schema.name}")
        writer, reader = schemas
        return self._read_body(data, _HEADER_LEN, writer, reader, fingerprint.hex())

    def _registry_schemas(self, schema_id: int) -> tuple[Any, Any]:
        """Writer and reader schema for a registry id: asked once, then cached."""
        found = self._id_readers.get(schema_id)
        if found is not None:
            return found
        if self._ids is None:
            raise DecodeError(
                "not Avro single-object encoding: expected marker c3 01 and an 8-byte "
                f"fingerprint, got the Confluent wire format (schema id {schema_id}), which "
                "needs a schema registry: set STREAMS_SCHEMA_REGISTRY_URL"
            )
        text = self._ids.schema_text(schema_id)
        try:
            raw = json.loads(text)
            fingerprint = bytes.fromhex(
                _fastavro_fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
            )
            known = self._readers.get(fingerprint)
            if known is not None:
                found = known
            else:
                writer = parse_schema(_strip_logical_types(raw), {})
                if not isinstance(writer, dict) or writer.get("name") != self.schema.name:
                    name = writer.get("name") if isinstance(writer, dict) else writer
                    raise DecodeError(
                        f"record is a {name} (registry id {schema_id}), "
                        f"this serde reads {self.schema.name}"
                    )
                found = (writer, self._parsed)
        except (ValueError, TypeError, KeyError, SchemaParseException) as exc:
            raise DecodeError(
                f"the registry's schema {schema_id} is not a usable Avro schema: {exc}"
            ) from exc
        self._id_readers.setdefault(schema_id, found)
        return found

    def _read_body(
        self, data: bytes, offset: int, writer: Any, reader: Any, writer_name: str
    ) -> dict[str, Any]:
        buffer = io.BytesIO(data)
        buffer.seek(offset)
        try:
            record = fastavro.schemaless_reader(buffer, writer, reader)
        except Exception as exc:
            # Untrusted bytes: fastavro raises EOFError, IndexError, UnicodeDecodeError, ...
            # The caller must get a DecodeError to dead-letter the record, not crash.
            raise DecodeError(
                f"corrupt {self.schema.name} body (writer {writer_name}, {len(data)} bytes): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if buffer.tell() != len(data):
            raise DecodeError(
                f"corrupt {self.schema.name} body: "
                f"{len(data) - buffer.tell()} bytes left after the record"
            )
        if not isinstance(record, dict):
            raise DecodeError(
                f"corrupt {self.schema.name} body: decoded a {type(record).__name__}, not a record"
            )
        if reader is not None:
            for name, default in self._mutable_defaults:
                if record.get(name) is default:
                    record[name] = copy.deepcopy(default)
        return record

    def _diagnose(self, obj: Mapping[str, Any], exc: Exception) -> str:
        """One line naming the field that fastavro choked on (only runs after a failure)."""
        if not isinstance(obj, Mapping):
            return f"expected a dict, got {type(obj).__name__}"
        fields = self._parsed["fields"]
        names = {f["name"] for f in fields}
        for f in fields:
            if f["name"] not in obj and "default" not in f:
                return f"field {f['name']!r} is missing and has no default"
        extra = sorted(str(k) for k in obj if k not in names)
        if extra:
            return (
                f"unknown field(s) {', '.join(map(repr, extra))}; known: {', '.join(sorted(names))}"
            )
        try:
            validate(obj, self._parsed, raise_errors=True)
        except ValidationError as invalid:
            error = invalid.errors[0]
            field = str(error.field).removeprefix(f"{self.schema.name}.")
            value = _short_repr.repr(error.datum)
            return f"field {field!r} is {value}, expected {_describe(error.schema)}"
        return f"{type(exc).__name__}: {exc}"


def _strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        stripped = {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
        # {"type": "long"} is just "long"; the bare name lets _int_field_ranges find it.
        if stripped.keys() == {"type"} and isinstance(stripped["type"], str):
            return stripped["type"]
        return stripped
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


def _int_field_ranges(record: Mapping[str, Any]) -> tuple[tuple[str, int, int], ...]:
    ranges = []
    for f in record["fields"]:
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        names = [b for b in branches if isinstance(b, str)]
        kinds = [b for b in names if b in _INT_RANGES]
        if len(kinds) == 1 and len(names) == len(branches) and set(names) <= {"null", kinds[0]}:
            ranges.append((f["name"], *_INT_RANGES[kinds[0]]))
    return tuple(ranges)


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_describe(s) for s in schema)
    if isinstance(schema, dict):
        if schema.get("type") == "enum":
            return f"one of {', '.join(schema['symbols'])}"
        if schema.get("type") == "map":
            return f"a map of {_describe(schema['values'])}"
        if schema.get("type") == "array":
            return f"an array of {_describe(schema['items'])}"
        return str(schema.get("name", schema.get("type")))
    return str(schema)


class PayloadSchema:
    """A workflow's Avro schema for its JSON payloads: says what is wrong with a payload.

    The intake checks payloads against it at the door (HTTP 422), so a run whose payload
    the first stage could not read is never accepted.
    """

    def __init__(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
            self._schema = parse_schema(_strip_logical_types(raw))
        except (OSError, ValueError, SchemaParseException) as exc:
            raise ConfigError(str(path), "", f"not a usable Avro schema: {exc}") from exc
        self.path = path

    def problem_with_json(self, payload: bytes) -> str | None:
        """None if `payload` is JSON matching the schema, else what is wrong, in one line."""
        try:
            value = json.loads(payload)
        except ValueError as exc:
            return f"not JSON: {exc}"
        except RecursionError:  # a caller's bytes must not crash the check (HTTP caps depth)
            return "not JSON this check can read: nested too deep"
        try:
            validate(value, self._schema, raise_errors=True)
        except ValidationError as exc:
            return f"does not match {self.path.name}: {'; '.join(map(str, exc.errors))[:300]}"
        except RecursionError:
            return f"does not match {self.path.name}: nested too deep"
        return None
