"""The Confluent wire format's framing: magic byte 0, 4-byte big-endian schema id, body.

Owns the bytes of the frame (Confluent's documented layout, "Wire format"); must not do I/O
nor know Avro. Readers tell the two encodings apart by the first byte: 0x00 here, 0xC3 for
Avro single-object encoding (whose marker is C3 01).
"""

from __future__ import annotations

import struct

from streams.errors import DecodeError

__all__ = ["HEADER_LEN", "MAGIC_BYTE", "frame", "is_confluent_framed", "schema_id_of"]

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_LEN = _HEADER.size  # 5: magic byte + 4-byte schema id
_MAX_ID = 2**31 - 1  # the registry's ids are Java ints


def frame(schema_id: int, body: bytes) -> bytes:
    """``00 | schema id, 4 bytes big-endian | body``."""
    if not 0 <= schema_id <= _MAX_ID:
        raise ValueError(f"schema id {schema_id} is outside 0..{_MAX_ID}")
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def is_confluent_framed(data: bytes) -> bool:
    return len(data) >= HEADER_LEN and data[0] == MAGIC_BYTE


def schema_id_of(data: bytes) -> int:
    """The schema id of a framed record; DecodeError if ``data`` is not framed."""
    if not is_confluent_framed(data):
        raise DecodeError(
            "not the Confluent wire format: expected magic byte 00 and a 4-byte schema id, "
            f"got {len(data)} bytes starting {bytes(data[:HEADER_LEN]).hex(' ') or '(empty)'}"
        )
    _, schema_id = _HEADER.unpack_from(data)
    return int(schema_id)
