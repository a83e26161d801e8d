"""DeadLetter schema evolution: the reasons streams writes are the schema's symbols, and
each version's records decode across the versions kept in schemas/history/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import pytest

from streams.events import DeadLetterCodec, DeadLetterRecord
from streams.serde import SchemaStore
from streams.types import DeadLetterReason, Record

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CURRENT = REPO_SCHEMAS / "dead_letter.avsc"
V3 = REPO_SCHEMAS / "history" / "dead_letter.v3.avsc"
V4 = REPO_SCHEMAS / "history" / "dead_letter.v4.avsc"


def _symbols(path: Path) -> list[str]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    [reason] = [f for f in schema["fields"] if f["name"] == "reason"]
    return list(reason["type"]["symbols"])


def _letter(reason: DeadLetterReason) -> DeadLetterRecord:
    record = Record("wf.delayed", 0, 3, b"run-1", b"raw", 1)
    return DeadLetterRecord.for_record(
        record, reason=reason, stage="intake-delay", workflow="wf", attempts=4, dead_at_ms=9
    )


def _store(current: Path, history: list[Path], tmp_path: Path) -> SchemaStore:
    shutil.copy(current, tmp_path / "dead_letter.avsc")
    (tmp_path / "history").mkdir()
    for i, path in enumerate(history):
        shutil.copy(path, tmp_path / "history" / f"{i}.avsc")
    return SchemaStore(tmp_path)


def test_every_reason_streams_writes_is_a_symbol_of_the_schema() -> None:
    assert _symbols(CURRENT) == list(get_args(DeadLetterReason))


def test_version_4_only_appends_forward_failed_to_version_3() -> None:
    assert _symbols(V4) == [*_symbols(V3), "forward_failed"]


@pytest.mark.parametrize("reason", ["forward_failed", "tool_timeout"])
def test_a_reader_still_on_version_3_decodes_version_4_letters(
    tmp_path: Path, reason: DeadLetterReason
) -> None:
    old_reader = DeadLetterCodec(_store(V3, [CURRENT], tmp_path))
    decoded = old_reader.decode(DeadLetterCodec().encode(_letter(reason)))
    # A symbol it does not know reads as the enum's default; the raw bytes are kept.
    assert decoded.reason == (reason if reason in _symbols(V3) else "handler_error")
    assert (decoded.raw_value, decoded.original_key) == (b"raw", b"run-1")


def test_version_3_letters_decode_with_the_current_schema(tmp_path: Path) -> None:
    old_writer = DeadLetterCodec(_store(V3, [], tmp_path))
    data = old_writer.encode(_letter("tool_saturated"))
    assert DeadLetterCodec().decode(data) == _letter("tool_saturated")
