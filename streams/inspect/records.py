"""One line per record for `streams tail`: where it is, its run, tenant and lane, and a
payload preview when it is a task event; its size when it is not.

Owns that line; must not read Kafka.
"""

from __future__ import annotations

import functools
import time

from streams.errors import StreamsError
from streams.events import TaskEventCodec
from streams.inspect.bytes_view import preview
from streams.types import Record


@functools.cache
def _events() -> TaskEventCodec:
    """Made at first use: a topology file read after the import may name the registry."""
    return TaskEventCodec()


def record_line(record: Record) -> str:
    at = record.timestamp_ms / 1000
    stamp = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    value = record.value
    if value is None:
        return f"{stamp} {where} tombstone key {preview(record.key or b'')}"
    try:
        event = _events().decode(value)
    except StreamsError:
        key = preview(record.key) if record.key else "-"
        return f"{stamp} {where} key {key}: not a task event ({len(value)} bytes)"
    return (
        f"{stamp} {where} run {event.run_id} tenant {event.tenant} lane {event.lane} "
        f"stage {event.stage} attempt {event.attempt}: {preview(event.payload, 60)}"
    )
