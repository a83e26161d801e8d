"""Handlers that call a declared tool, for worker subprocesses (`tests.integration.
tool_handlers:NAME` in a topology). Steered by environment variables:
  TOOL_CALL_LOG  a file that gets one line per tool call: "<wall time> <pid>"
"""

from __future__ import annotations

import os
import time
from typing import Any

_LOG_PATH = os.environ.get("TOOL_CALL_LOG")
_log = open(_LOG_PATH, "a", buffering=1, encoding="utf-8") if _LOG_PATH else None  # noqa: SIM115
_PID = os.getpid()


class CrmDown(Exception):
    """The fake CRM's outage."""


def _record_call() -> None:
    if _log is not None:
        _log.write(f"{time.time():.6f} {_PID}\n")


async def call_api(event: Any, ctx: Any) -> None:
    """One call through the tool "api" per record, then hand the event on."""
    await ctx.tool("api").call(_record_call)
    ctx.emit(event)


def read_calls(path: str) -> list[tuple[float, int]]:
    """(wall time, pid) of every call logged so far; a cut-off last line is skipped."""
    calls = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                calls.append((float(parts[0]), int(parts[1])))
    return calls
