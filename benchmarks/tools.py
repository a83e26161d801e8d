"""Tools: what ctx.tool costs per call, and how close a fleet of worker processes keeps to a
tool's fleet-wide rate.

1. Overhead (no Kafka): N calls of a no-op function through each ctx.tool form, against
   the bare call in the same run, on a tool with a breaker, a concurrency ceiling and a rate
   far above what the loop reaches (so nothing waits). µs per call = elapsed / N.
2. Fleet-wide rate: one stage, 6 partitions, a tool with `rate` R; 1, 2 and 4
   `streams worker` processes share it over a backlog. Every call is logged with its wall
   time; after the group has settled, calls in a window of W seconds are counted.
   accuracy = calls / (R * W); the ceiling is (R * W + burst) / (R * W).

Run: python -m benchmarks.tools [--quick]. Writes benchmarks/results/tools.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from benchmarks import common
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.runtime.tools import ToolBox, ToolRegistry
from streams.topology import parse_topology

NAME = "tools"
_LOG_PATH = os.environ.get("BENCH_TOOL_CALL_LOG")
_log = open(_LOG_PATH, "a", buffering=1, encoding="utf-8") if _LOG_PATH else None  # noqa: SIM115


def _note_call() -> None:
    if _log is not None:
        _log.write(f"{time.time():.6f} {os.getpid()}\n")


async def call_api(event: Any, ctx: Any) -> None:
    """The worker processes' handler: one call through tool "api" per record."""
    await ctx.tool("api").call(_note_call)
    ctx.emit(event)


# --------------------------------------------------------------------------- overhead
def _toolbox() -> ToolBox:
    topology = parse_topology(
        {
            "workflow": "bench",
            "tools": {"api": {"concurrency": 64, "rate": 10_000_000, "burst": 10_000_000}},
            "stages": {"s": {"handler": "benchmarks.common:unused", "tools": ["api"]}},
        },
        "<benchmark tools>",
        validate_handlers=False,
    )
    tools = ToolBox(ToolRegistry(topology), topology.stages["s"], "bench")
    tools.set_share(1.0)
    return tools


def overhead(calls: int) -> dict[str, float]:
    tools = _toolbox()

    def noop() -> None:
        return None

    async def anoop() -> None:
        return None

    async def async_forms() -> dict[str, float]:
        out: dict[str, float] = {}
        started = time.perf_counter()
        for _ in range(calls):
            await anoop()
        out["bare_async_us"] = (time.perf_counter() - started) / calls * 1e6
        started = time.perf_counter()
        for _ in range(calls):
            await tools.call("api").call(anoop)
        out["call_async_us"] = (time.perf_counter() - started) / calls * 1e6
        started = time.perf_counter()
        for _ in range(calls):
            async with tools.call("api"):
                await anoop()
        out["async_with_us"] = (time.perf_counter() - started) / calls * 1e6
        return out

    result = asyncio.run(async_forms())
    started = time.perf_counter()
    for _ in range(calls):
        noop()
    result["bare_sync_us"] = (time.perf_counter() - started) / calls * 1e6
    started = time.perf_counter()
    for _ in range(calls):
        tools.call("api").call_blocking(noop)
    result["call_blocking_us"] = (time.perf_counter() - started) / calls * 1e6
    return result


# --------------------------------------------------------------------------- fleet rate
def fleet_rate(
    client: ClientConfig, bootstrap: str, processes: int, rate: float, burst: float, window_s: float
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "workflow": f"benchtools{uuid.uuid4().hex[:8]}",
        "lanes": ["standard"],
        "topic_defaults": {"partitions": 6, "retention_ms": 3_600_000},
        "tools": {"api": {"rate": rate, "burst": burst, "max_wait_s": 120}},
        "stages": {"work": {"handler": "benchmarks.tools:call_api", "tools": ["api"]}},
    }
    topology = parse_topology(data, "<benchmark tools>", validate_handlers=False)
    admin = Admin(client)
    admin.apply(
        TopicWanted(t, spec.partitions, None, spec.compacted)
        for t, spec in topology.all_topics().items()
    )
    common.wait_for_leaders(client, topology)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flow.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        log = Path(tmp) / "calls.log"
        log.touch()
        backlog = int(rate * (window_s + 30) * 1.5)
        common.produce_events(
            client, topology, topology.stages["work"].input_topics[0], backlog, 64, stage="work"
        )
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BENCH_TOOL_CALL_LOG": str(log),
            "PYTHONUNBUFFERED": "1",
        }
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", str(path), "--stage", "work"],
                cwd=common.REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        try:
            deadline = time.monotonic() + 90
            while len({pid for _, pid in _calls(log)}) < processes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not every one of {processes} workers called the tool")
                time.sleep(0.5)
            time.sleep(5.0)  # past the last join's rebalance
            start = time.time()
            time.sleep(window_s + 1.0)
            calls = [c for c in _calls(log) if start <= c[0] < start + window_s]
        finally:
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
            common.delete_workflow(client, topology)
    per_process: dict[int, int] = {}
    for _, pid in calls:
        per_process[pid] = per_process.get(pid, 0) + 1
    worst_1s = 0
    times = sorted(t for t, _ in calls)
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        worst_1s = max(worst_1s, i - j + 1)
    return {
        "processes": processes,
        "calls": len(calls),
        "calls_per_s": len(calls) / window_s,
        "accuracy": len(calls) / (rate * window_s),
        "ceiling_ratio": (rate * window_s + burst) / (rate * window_s),
        "worst_1s_calls": worst_1s,
        "per_process": sorted(per_process.values()),
    }


def _calls(path: Path) -> list[tuple[float, int]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((float(parts[0]), int(parts[1])))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer calls, a shorter window")
    ap.add_argument("--calls", type=int, default=None, help="calls per overhead variant")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--burst", type=float, default=2.0)
    ap.add_argument("--window", type=float, default=None, help="seconds counted per fleet size")
    ap.add_argument("--fleets", default="1,2,4", help="worker process counts")
    args = ap.parse_args(argv)
    calls = args.calls or (20_000 if args.quick else 200_000)
    window_s = args.window or (10.0 if args.quick else 30.0)
    cost = overhead(calls)
    common.print_table(
        ["form", "us/call", "bare us/call", "overhead us"],
        [
            ["await call(fn)", cost["call_async_us"], cost["bare_async_us"],
             cost["call_async_us"] - cost["bare_async_us"]],
            ["async with", cost["async_with_us"], cost["bare_async_us"],
             cost["async_with_us"] - cost["bare_async_us"]],
            ["call_blocking(fn)", cost["call_blocking_us"], cost["bare_sync_us"],
             cost["call_blocking_us"] - cost["bare_sync_us"]],
        ],
    )  # fmt: skip
    bootstrap = common.bootstrap()
    client = ClientConfig(bootstrap_servers=bootstrap)
    fleets = [
        fleet_rate(client, bootstrap, int(n), args.rate, args.burst, window_s)
        for n in args.fleets.split(",")
    ]
    common.print_table(
        ["processes", "calls/s", "accuracy", "ceiling", "worst 1 s", "per process"],
        [
            [f["processes"], f["calls_per_s"], f["accuracy"], f["ceiling_ratio"],
             f["worst_1s_calls"], f["per_process"]]
            for f in fleets
        ],
    )  # fmt: skip
    ok = all(f["accuracy"] <= f["ceiling_ratio"] for f in fleets)
    print("PASS" if ok else "FAIL", "fleet-wide rate within rate x window + burst")
    path = common.write_results(
        NAME,
        {"calls": calls, "rate": args.rate, "burst": args.burst, "window_s": window_s},
        {"overhead": cost, "fleet_rate": fleets},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
