"""benchmarks.peers, the pure parts: the peers' envelope codec writes what streams writes,
the output check, the clock arithmetic and the medians over repeats. No Kafka."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.peers import results
from benchmarks.peers.envelope import Envelope
from benchmarks.peers.venvs import PEERS
from streams.events import TaskEventCodec, new_task_event


def _event_bytes() -> bytes:
    event = new_task_event(
        workflow="w", stage="pass", tenant="t", lane="standard", payload=b"x" * 64, now_ms=1_000
    )
    return TaskEventCodec().encode(event)


def test_the_peers_restage_writes_the_bytes_streams_writes() -> None:
    data = _event_bytes()
    codec = TaskEventCodec()
    ours = codec.encode(codec.decode(data).with_stage("completed", 2_000))
    assert Envelope().restage(data, "completed", 2_000) == ours


def test_the_peers_envelope_refuses_bytes_of_another_schema() -> None:
    with pytest.raises(ValueError, match="not a TaskEvent"):
        Envelope().decode(b"\x00\x00\x00\x00\x01rest")


def test_every_peer_is_pinned_exactly() -> None:
    assert {p.name: p.version.count(".") for p in PEERS} == {"quix": 2, "arroyo": 2, "faust": 2}


def test_output_check_allows_duplicates_and_fails_on_a_missing_record() -> None:
    ok = results.output_check(
        [b"a", b"b"], [b"b", b"a", b"a"], committed=2, input_end=2, restaged=True
    )
    assert ok == {
        "ok": True, "missing": 0, "duplicates": 1, "committed_to_end": True, "restaged": True,
    }  # fmt: skip
    missing = results.output_check([b"a", b"b"], [b"a"], committed=2, input_end=2, restaged=True)
    assert (missing["ok"], missing["missing"]) == (False, 1)


def test_output_check_fails_short_of_the_end_or_unrestaged() -> None:
    short = results.output_check([b"a"], [b"a"], committed=0, input_end=1, restaged=True)
    assert not short["ok"] and not short["committed_to_end"]
    assert not results.output_check([b"a"], [b"a"], committed=1, input_end=1, restaged=False)["ok"]


def test_run_numbers_clock_from_first_handled() -> None:
    numbers = results.run_numbers(1000, first_at=10.0, t_output=12.0, t_committed=14.0, cpu_s=0.05)
    assert numbers == {
        "events_per_s_output": 500.0, "events_per_s_committed": 250.0, "cpu_us_per_event": 50.0,
    }  # fmt: skip


def _run(system: str, workload: str, rate: float, ok: bool = True) -> dict[str, Any]:
    return {
        "system": system, "workload": workload, "version": "1", "check": {"ok": ok},
        "events_per_s_output": rate, "events_per_s_committed": rate / 2,
        "cpu_us_per_event": 1e6 / rate, "peak_rss_mb": 100.0,
    }  # fmt: skip


def test_summarise_takes_medians_per_system_and_ratios_from_them() -> None:
    runs = [
        _run("bare", "passthrough", 300.0), _run("quix", "passthrough", 100.0),
        _run("bare", "passthrough", 100.0), _run("quix", "passthrough", 50.0, ok=False),
        _run("bare", "passthrough", 200.0), _run("quix", "passthrough", 400.0),
        _run("quix", "io", 4.0),
    ]  # fmt: skip
    rows = {(r["workload"], r["system"]): r for r in results.summarise(runs, ideal_io=5000.0)}
    bare, quix = rows["passthrough", "bare"], rows["passthrough", "quix"]
    assert bare["events_per_s_output"] == 200.0 and bare["events_per_s_each"] == [300, 100, 200]
    assert quix["events_per_s_output"] == 100.0 and quix["x_bare"] == 0.5
    assert quix["repeats"] == 3 and not quix["all_ok"] and bare["all_ok"]
    assert rows["io", "quix"]["share_of_ideal"] == pytest.approx(4.0 / 5000.0)
    assert "x_bare" not in rows["io", "quix"]
