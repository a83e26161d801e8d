"""HTTP load from wrk (a C load generator), so the client does not take the CPU the server
needs; results in the shape of intake_admission.drive's. Benchmarks only.

wrk keeps `connections` requests in flight for a fixed time (no request count); bodies
cycle through the given list; a Lua script counts status codes and reads wrk's own
latency histogram (microseconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_SCRIPT = """
local bodies = %(bodies)s
local headers = {["Content-Type"] = "application/json"}
local sent = 0
statuses = {}  -- global: done() reads each thread's copy with thread:get
all_threads = {}

setup = function(thread) table.insert(all_threads, thread) end

request = function()
  sent = sent + 1
  return wrk.format("POST", nil, headers, bodies[(sent %% #bodies) + 1])
end

response = function(status, _headers, _body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, _requests)
  local counts = {}
  for _, thread in ipairs(all_threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%%s": %%d', status, n)) end
  io.write(string.format(
    'WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d,'
    .. ' "errors": %%d, "timeouts": %%d, "statuses": {%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, table.concat(parts, ", ")))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, bodies: list[bytes], *, connections: int, seconds: float) -> dict[str, Any]:
    """POST the bodies round robin over `connections` keep-alive connections for `seconds`
    (one wrk thread); returns rate, latency percentiles and outcomes by status code."""
    lua_bodies = "{" + ", ".join(_lua_string(b) for b in bodies) + "}"
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "post.lua"
        script.write_text(_SCRIPT % {"bodies": lua_bodies}, encoding="utf-8")
        argv = [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(script), url,
        ]  # fmt: skip
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(line[4:])
    outcomes = dict(summary["statuses"])
    for kind in ("errors", "timeouts"):
        if summary[kind]:
            outcomes[kind] = summary[kind]
    seconds_run = summary["duration_us"] / 1e6
    return {
        "requests": summary["requests"], "timed_out": False, "seconds": seconds_run,
        "per_s": summary["requests"] / seconds_run,
        "p50_ms": summary["p50_us"] / 1000, "p99_ms": summary["p99_us"] / 1000,
        "max_ms": summary["max_us"] / 1000, "outcomes": outcomes, "concurrency": connections,
        "load_generator": "wrk",
    }  # fmt: skip


def _lua_string(body: bytes) -> str:
    # A Lua long string cannot hold "]]" unless its level differs: pick a free level.
    text = body.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"
