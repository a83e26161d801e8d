"""Control records (schemas/control.avsc): the codec round trip, their keys, and the state
folded from them (latest per key wins; cleared overrides keep who cleared them)."""

from __future__ import annotations

import pytest

from streams.control.records import (
    ControlCodec,
    ControlRecord,
    ControlState,
    forced_level,
    manual_pause,
    published_level,
    tool_forced_open,
)
from streams.errors import SerdeError

AT_MS = 1_700_000_000_000


def test_every_kind_round_trips_through_avro() -> None:
    codec = ControlCodec()
    records = [
        forced_level("wf", "essential", who="ana", why="crm incident", at_ms=AT_MS,
                     expires_at_ms=AT_MS + 1_800_000),
        manual_pause("wf", "act", who="ana", why=None, at_ms=AT_MS),
        manual_pause("wf", "act", who="bo", why="fixed", at_ms=AT_MS + 5, active=False),
        tool_forced_open("wf", "crm_write", who="ana", why="vendor down", at_ms=AT_MS),
        published_level("wf", "lean", who="worker plan/ab12", at_ms=AT_MS),
    ]  # fmt: skip
    for record in records:
        data = codec.encode(record)
        assert data[:2] == b"\xc3\x01"  # single-object encoding
        assert codec.decode(data) == record


def test_keys_name_what_the_record_is_about() -> None:
    assert forced_level("wf", "lean", who="a", why=None, at_ms=0).key == "level"
    assert manual_pause("wf", "act", who="a", why=None, at_ms=0).key == "pause/act"
    assert tool_forced_open("wf", "crm", who="a", why=None, at_ms=0).key == "tool/crm"
    assert published_level("wf", "lean", who="a", at_ms=0).key == "published_level"


def test_garbage_is_a_serde_error() -> None:
    with pytest.raises(SerdeError):
        ControlCodec().decode(b"not avro")


def test_state_keeps_the_latest_record_per_key() -> None:
    state = ControlState()
    state.apply(forced_level("wf", "essential", who="ana", why="incident", at_ms=AT_MS,
                             expires_at_ms=AT_MS + 60_000))  # fmt: skip
    state.apply(manual_pause("wf", "act", who="ana", why="crm", at_ms=AT_MS))
    state.apply(manual_pause("wf", "enrich", who="ana", why=None, at_ms=AT_MS))
    state.apply(manual_pause("wf", "enrich", who="bo", why=None, at_ms=AT_MS + 1, active=False))
    state.apply(tool_forced_open("wf", "crm_write", who="cy", why="vendor", at_ms=AT_MS))
    state.apply(published_level("wf", "lean", who="w1", at_ms=AT_MS))
    now = AT_MS / 1000
    forced = state.forced(now)
    assert forced is not None and forced.level == "essential"
    assert forced.expires_at == AT_MS / 1000 + 60
    assert state.forced(now + 60) is None  # expired
    assert set(state.paused_stages()) == {"act"}
    assert state.paused_stages()["act"].who == "ana"
    assert state.paused_stages()["act"].why == "crm"
    assert set(state.tools_forced_open()) == {"crm_write"}
    assert state.published_level() == "lean"
    # The resume is kept, with who resumed.
    assert state.records["pause/enrich"].who == "bo"


def test_a_record_of_another_workflow_is_ignored() -> None:
    state = ControlState("wf")
    state.apply(manual_pause("other", "act", who="a", why=None, at_ms=0))
    assert state.paused_stages() == {}


def test_control_record_refuses_a_kind_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="kind"):
        ControlRecord("wf", "bogus", "", True, None, None, "a", None, 0)  # type: ignore[arg-type]
