"""Handlers for topology/example.yaml and topology/minimal.yaml: a template, not a library.

A handler is `async def name(event, ctx)` (or a plain `def`, run on a handler thread). It
runs once per record; what it emits goes to the stage's downstream topics (or
"{workflow}.completed" after the last stage). Returning without emitting ends the run at
this stage; raising a signal chooses another outcome.
"""

from __future__ import annotations

import dataclasses
import json

from streams import DeadLetter, HandlerContext, Retry, TaskEvent


async def plan(event: TaskEvent, ctx: HandlerContext) -> None:
    request = json.loads(event.payload or b"{}")
    if "ticket" not in request:
        raise DeadLetter("no ticket in the request")  # never retried: dead-lettered now
    steps = ["look up", "reply"] if request.get("simple") else ["look up", "draft", "reply"]
    planned = dataclasses.replace(event, payload=json.dumps({**request, "steps": steps}).encode())
    # Simple requests can wait: move them to the standard lane (never above the lane the
    # run arrived in, unless the stage sets allow_lane_promotion).
    ctx.emit(planned, lane="standard" if request.get("simple") else None)


async def act(event: TaskEvent, ctx: HandlerContext) -> None:
    request = json.loads(event.payload)
    if request.get("crm_busy"):
        raise Retry(after_s=30, reason="CRM rate limit")  # dead-lettered until retry tiers
    ctx.emit(event)  # from the last stage: the run is completed


async def enrich(event: TaskEvent, ctx: HandlerContext) -> None:
    # Background work on finished runs (indexing, summaries); nothing downstream.
    return None
