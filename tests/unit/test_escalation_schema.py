"""Escalation records (W.escalations) round-trip; DeadLetter v5 adds retry_budget_exhausted
and v4 readers (kept in schemas/history) still decode v5 letters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from streams.escalations import EscalationCodec, EscalationRecord
from streams.events import DeadLetterCodec, DeadLetterRecord
from streams.serde import SchemaStore
from streams.types import Record

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _symbols(path: Path) -> list[str]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    [reason] = [f for f in schema["fields"] if f["name"] == "reason"]
    return list(reason["type"]["symbols"])


def test_escalation_round_trips() -> None:
    record = Record("wf.act.standard", 2, 41, b"run-1", b"\xc3\x01event", 5, (("trace.a", b"b"),))
    escalation = EscalationRecord.for_record(
        record,
        workflow="wf",
        run_id="run-1",
        stage="act",
        attempts=3,
        reason="retries_exhausted",
        error=ConnectionError("crm down"),
        escalated_at_ms=77,
    )
    codec = EscalationCodec()
    decoded = codec.decode(codec.encode(escalation))
    assert decoded == escalation
    assert decoded.event == b"\xc3\x01event"
    assert (decoded.error_type, decoded.error_message) == ("ConnectionError", "crm down")


def test_dead_letter_v5_appends_retry_budget_exhausted_to_v4() -> None:
    v4 = REPO_SCHEMAS / "history" / "dead_letter.v4.avsc"
    assert _symbols(REPO_SCHEMAS / "dead_letter.avsc") == [*_symbols(v4), "retry_budget_exhausted"]


def test_a_v4_reader_decodes_a_v5_letter_as_the_default_reason(tmp_path: Path) -> None:
    shutil.copy(REPO_SCHEMAS / "history" / "dead_letter.v4.avsc", tmp_path / "dead_letter.avsc")
    (tmp_path / "history").mkdir()
    shutil.copy(REPO_SCHEMAS / "dead_letter.avsc", tmp_path / "history" / "v5.avsc")
    letter = DeadLetterRecord.for_record(
        Record("wf.a.standard", 0, 1, b"k", b"raw", 1),
        reason="retry_budget_exhausted",
        stage="a",
        workflow="wf",
        attempts=2,
        dead_at_ms=3,
    )
    decoded = DeadLetterCodec(SchemaStore(tmp_path)).decode(DeadLetterCodec().encode(letter))
    assert decoded.reason == "handler_error" and decoded.raw_value == b"raw"
