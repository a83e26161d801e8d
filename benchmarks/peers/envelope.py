"""The TaskEvent envelope for peer children: decode, restage, encode, with plain fastavro.

The peers run in their own virtual environments without streams, so they cannot use
TaskEventCodec; this reads the same schema file (schemas/task_event.avsc, the one
streams.events.TaskEventCodec resolves "dev.streams.TaskEvent" to) and writes the same
bytes: Avro single-object encoding (C3 01, CRC-64-AVRO fingerprint of the schema's
parsing canonical form, Avro body), as streams.serde documents. Standard library and
fastavro only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "task_event.avsc"
_MARKER = b"\xc3\x01"


def _without_logical_types(node: Any) -> Any:
    # As streams.serde does: timestamps stay int milliseconds (fastavro would build a
    # datetime per field per record otherwise). The canonical form, and so the
    # fingerprint, ignores logical types, so no byte changes.
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


class Envelope:
    """Restages TaskEvent bytes: the work every system in the benchmark does per record."""

    def __init__(self, schema_file: Path = SCHEMA_FILE) -> None:
        raw = json.loads(schema_file.read_text(encoding="utf-8"))
        self.header = _MARKER + bytes.fromhex(
            fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
        )
        self._schema = parse_schema(_without_logical_types(raw), {})

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[: len(self.header)] != self.header:
            raise ValueError(f"not a TaskEvent of this schema: starts {data[:10].hex()}")
        record = schemaless_reader(io.BytesIO(data[len(self.header) :]), self._schema, None)
        if not isinstance(record, dict):
            raise ValueError("a TaskEvent body decodes to a record")
        return record

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        schemaless_writer(out, self._schema, record)
        return out.getvalue()

    def restage(self, data: bytes, stage: str, now_ms: int) -> bytes:
        """What streams' emit does to an event: queued for `stage` now, attempt 0."""
        record = self.decode(data)
        record["stage"], record["enqueued_at"], record["attempt"] = stage, now_ms, 0
        return self.encode(record)
