"""Handlers for topology/example.yaml: a template, not a library.

A handler is `async def name(event, ctx)`. It runs once per record; whatever it emits goes
to the stage's downstream topics (or "{workflow}.completed" after the last stage).
Returning without emitting ends the run at this stage.
"""

from __future__ import annotations

from typing import Any


async def plan(event: Any, ctx: Any) -> None:
    # Decide what to do; pass the (enriched) event on to `act`.
    ctx.emit(event)


async def act(event: Any, ctx: Any) -> None:
    # Do it; emitting from the last stage marks the run completed.
    ctx.emit(event)


async def enrich(event: Any, ctx: Any) -> None:
    # Background work on finished runs (indexing, summaries); nothing downstream.
    return None
