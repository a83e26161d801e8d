"""An uncaught ToolUnavailable / ToolSaturated / ToolTimeout dead-letters the record with
its own reason, which DeadLetter schema v3 carries (v2 kept in schemas/history)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from streams.errors import ToolSaturated, ToolTimeout, ToolUnavailable
from streams.events import DeadLetterCodec, DeadLetterRecord
from streams.policy.outcome import dead_letter_reason
from streams.serde import SchemaStore
from streams.types import DeadLetterReason, Record

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ToolUnavailable("crm", 3.0), "tool_unavailable"),
        (ToolSaturated("crm", 0.5, "slot"), "tool_saturated"),
        (ToolTimeout("crm", 2.0), "tool_timeout"),
    ],
)
def test_uncaught_tool_errors_have_their_own_reason(error: Exception, reason: str) -> None:
    assert dead_letter_reason("error", error, False) == reason


def test_every_reason_is_a_schema_symbol_and_v2_is_kept() -> None:
    current = json.loads((REPO_SCHEMAS / "dead_letter.avsc").read_text())
    field = next(f for f in current["fields"] if f["name"] == "reason")
    assert field["type"]["symbols"] == list(get_args(DeadLetterReason))
    v2 = json.loads((REPO_SCHEMAS / "history" / "dead_letter.v2.avsc").read_text())
    v2_symbols = next(f for f in v2["fields"] if f["name"] == "reason")["type"]["symbols"]
    assert "tool_unavailable" not in v2_symbols and len(v2_symbols) == 8
    store = SchemaStore(REPO_SCHEMAS)
    letters = [s for s in store.schemas if s.name == "dev.streams.DeadLetter"]
    # One version per file: the current one and each kept in history/ (v4 added forward_failed).
    kept = len(list((REPO_SCHEMAS / "history").glob("dead_letter.v*.avsc")))
    assert len({s.fingerprint for s in letters}) == kept + 1 >= 3


def test_a_tool_dead_letter_round_trips() -> None:
    codec = DeadLetterCodec(SchemaStore(REPO_SCHEMAS))
    record = Record("w.s.standard", 0, 7, b"k", b"v", 1_700_000_000_000, ())
    letter = DeadLetterRecord.for_record(
        record,
        reason="tool_unavailable",
        stage="s",
        workflow="w",
        attempts=1,
        dead_at_ms=1_700_000_000_001,
        error=ToolUnavailable("crm", 4.0),
    )
    assert codec.decode(codec.encode(letter)) == letter
    assert letter.error_type == "streams.errors.ToolUnavailable"
