"""Handlers for worker subprocesses (`tests.integration.proc_handlers:NAME` in a topology).

They are steered by environment variables, because a subprocess cannot take a closure:
  PROC_HANDLER_SLEEP_S  seconds each call sleeps before emitting (default 0)
  PROC_HANDLER_LOG      a file that gets "start" and "done" lines per call, each with the
                        run id and the input record's partition and offset
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

_SLEEP_S = float(os.environ.get("PROC_HANDLER_SLEEP_S", "0"))
_LOG_PATH = os.environ.get("PROC_HANDLER_LOG")
# Line-buffered, so a "done" line is on disk before the worker sends the emit; a kill -9
# can cut at most the last line short, which the reader skips.
_log = open(_LOG_PATH, "a", buffering=1, encoding="utf-8") if _LOG_PATH else None  # noqa: SIM115


def _note(what: str, event: Any, ctx: Any) -> None:
    if _log is not None:
        record = ctx.record
        _log.write(f"{what} {event.run_id} {record.partition} {record.offset}\n")


async def sleep_then_emit(event: Any, ctx: Any) -> None:
    """Sleep PROC_HANDLER_SLEEP_S, then hand the event on unchanged."""
    _note("start", event, ctx)
    if _SLEEP_S > 0:
        await asyncio.sleep(_SLEEP_S)
    ctx.emit(event)
    _note("done", event, ctx)
