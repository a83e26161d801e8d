"""Pure parts of the peers benchmark: the output check, per-run numbers, and the medians
over repeats. No Kafka, no processes (tests/unit/test_peers_benchmark.py covers them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import median
from typing import Any

#: Numbers a run reports that get a median over the repeats.
MEDIAN_OF = ("events_per_s_output", "events_per_s_committed", "cpu_us_per_event", "peak_rss_mb")


def output_check(
    input_keys: Sequence[bytes],
    output_keys: Sequence[bytes],
    *,
    committed: int,
    input_end: int,
    restaged: bool,
) -> dict[str, Any]:
    """Every input record (its key is its unique run id) came out at least once, the group's
    committed offsets reached the input's end, and the output is restaged.

    Duplicates are allowed (at-least-once) and counted; a missing key fails the run."""
    produced = Counter(output_keys)
    missing = sum(1 for k in set(input_keys) if k not in produced)
    return {
        "ok": missing == 0 and committed >= input_end and restaged,
        "missing": missing,
        "duplicates": sum(n - 1 for n in produced.values() if n > 1),
        "committed_to_end": committed >= input_end,
        "restaged": restaged,
    }


def run_numbers(
    count: int, first_at: float, t_output: float, t_committed: float, cpu_s: float
) -> dict[str, float]:
    """The clock (first record handled -> last output record, and -> offsets committed to
    the end) and the child's CPU per event."""
    return {
        "events_per_s_output": count / (t_output - first_at),
        "events_per_s_committed": count / (t_committed - first_at),
        "cpu_us_per_event": 1e6 * cpu_s / count,
    }


def summarise(runs: Sequence[dict[str, Any]], *, ideal_io: float) -> list[dict[str, Any]]:
    """One row per (workload, system), in first-seen order: medians over its repeats, every
    repeat's rate, and the ratio the workload is judged by (passthrough: x the bare loop's
    median; io: share of the ideal rate concurrency / latency)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["workload"], run["system"]), []).append(run)
    rows = []
    for (workload, system), group in groups.items():
        row: dict[str, Any] = {
            "workload": workload,
            "system": system,
            "version": group[0].get("version"),
            "repeats": len(group),
            "all_ok": all(r["check"]["ok"] for r in group),
            "events_per_s_each": [r["events_per_s_output"] for r in group],
        }
        for key in MEDIAN_OF:
            row[key] = median(r[key] for r in group)
        rows.append(row)
    bare = next((r for r in rows if r["workload"] == "passthrough" and r["system"] == "bare"), None)
    for row in rows:
        if row["workload"] == "passthrough" and bare is not None:
            row["x_bare"] = row["events_per_s_output"] / bare["events_per_s_output"]
        if row["workload"] == "io":
            row["share_of_ideal"] = row["events_per_s_output"] / ideal_io
    return rows
