"""Handlers for topology/triage.yaml: support-ticket triage, a template to copy.

A run carries one ticket as JSON, {"ticket": ..., "subject": ...}; each stage adds fields
and emits a changed copy: plan -> retrieve -> act -> approve, then the background stage
enrich summarises finished runs. The dependencies are simulated (topology/sim.py); swap
`deps` for real clients and the handlers stay as they are.

Every dependency call goes through the tool triage.yaml declares for it (`ctx.tool`:
rate and concurrency ceilings, timeout, breaker) when the stage lists it; the demo's naive
run drops the tools, and there the same handlers call the dependency directly, as a plain
consumer loop would.

Every handler first records itself in the WorkLedger, which counts work done on runs
already past their deadline: the waste that backpressure is meant to avoid. A handler that
raises is dead-lettered by streams (no retry), so the LLM's rare failures cost one run each,
and so does a CRM write that fails or a call a tool refuses (ToolUnavailable while the
CRM's breaker is open: the stage pauses then, so that is only the calls already waiting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from streams.events import TaskEvent
from streams.runtime.context import HandlerContext
from topology.sim import deps, scaled

P = ParamSpec("P")
R = TypeVar("R")

ACTIONS = ("reply", "refund", "escalate")
NEEDS_APPROVAL = {"refund"}  # actions a person must confirm
HURRY_BELOW_S = 10.0  # simulated seconds left before the deadline that count as "little"
REVIEW_MAX_WAIT_S = 2.0  # simulated seconds a run waits for a free reviewer, at most

# The full prompt's standing instructions. Under pressure plan leaves them out: answers get
# a little worse, calls take about 45 % less time (the LLM's latency grows with prompt length).
PLAYBOOK = """\
You are the first-line triage agent of a software company's support desk.
Read the ticket and choose exactly one action:
- reply: the answer is in the knowledge base or the question is about usage; draft a reply
  with links to the relevant articles, in the customer's language, without promising dates.
- refund: the customer was charged in error, twice, or for a plan they cancelled within the
  grace period; a refund is drafted and a person must approve it before it is sent.
- escalate: outage, data loss, security, legal, or an angry enterprise customer; hand it
  to the on-call engineer with a one-paragraph summary and the steps already tried.
When unsure between reply and escalate, escalate. Never ask the customer for passwords or
card numbers. Prefer the action that resolves the ticket with the fewest round trips, and
keep the tone calm and specific: name the product, the plan and the invoice if known.
"""


async def plan(event: TaskEvent, ctx: HandlerContext) -> None:
    """Decide the action with one LLM call."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    # Degrade on purpose when the run cannot afford the full prompt: background work, or a
    # deadline close enough that a faster, rougher answer beats a late one.
    left = _seconds_left(ctx)
    hurried = ctx.lane == "background" or (left is not None and left < scaled(HURRY_BELOW_S))
    question = f"Ticket {ticket['ticket']}: {ticket['subject']}\nAnswer with one of: "
    prompt = ("" if hurried else PLAYBOOK) + question + ", ".join(ACTIONS) + "."
    action = await _call(ctx, "llm", deps.llm.complete, prompt)
    ctx.emit(_with(event, ticket, action=action, prompt="short" if hurried else "full"))


async def retrieve(event: TaskEvent, ctx: HandlerContext) -> None:
    """Gather context: knowledge-base articles and the customer record, concurrently."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    docs, customer = await asyncio.gather(
        _call(ctx, "vector_search", deps.vector.search, str(ticket["subject"])),
        _call(ctx, "crm_read", deps.crm.read, str(ticket["ticket"])),
    )
    ctx.emit(_with(event, ticket, docs=docs, tier=customer["tier"]))


async def act(event: TaskEvent, ctx: HandlerContext) -> None:
    """Apply the action in the CRM: the workflow's bottleneck (rate-limited writes)."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    status = "pending_approval" if ticket["action"] in NEEDS_APPROVAL else "done"
    # Exactly-once delivery covers Kafka only (emits and offsets); a record redelivered
    # after a crash runs this handler again, so the CRM write carries an idempotency key
    # that is the same on every attempt of this run at this stage.
    ref = await _call(
        ctx,
        "crm_write",
        deps.crm.write,
        str(ticket["ticket"]),
        {"action": ticket["action"], "status": status, "docs": ticket["docs"]},
        idempotency_key=f"{event.run_id}:{ctx.stage}",
    )
    ctx.emit(_with(event, ticket, crm_ref=ref, status=status))


async def approve(event: TaskEvent, ctx: HandlerContext) -> None:
    """Bounded human review: wait a little for a reviewer, never indefinitely."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    if ticket["status"] == "pending_approval":
        left = _seconds_left(ctx)
        wait = scaled(REVIEW_MAX_WAIT_S) if left is None else min(scaled(REVIEW_MAX_WAIT_S), left)
        # No reviewer in time: the change stays pending in the CRM for a person to pick up
        # later, and the run finishes now instead of holding a slot of this stage.
        if await deps.reviewers.review(event.run_id, max_wait_s=max(wait, 0.0)):
            ticket["status"] = "approved"
    # The run is finished: its deadline no longer applies to background follow-up work
    # (enrich would otherwise drop it as expired). It stays in the payload for reporting.
    done = _with(event, ticket, deadline_ms=event.deadline_ms, finished_at_ms=_now_ms())
    ctx.emit(dataclasses.replace(done, deadline_ms=None))


async def enrich(event: TaskEvent, ctx: HandlerContext) -> None:
    """Background: a short LLM summary of a finished run, for search and reporting. Cheap
    on purpose (short prompt), and it runs only on capacity the foreground leaves over."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    summary = f"Summarise in one line: {ticket['subject']} -> {ticket['status']}"
    await _call(ctx, "llm", deps.llm.complete, summary)


# --------------------------------------------------------------------------- helpers


async def _call(
    ctx: HandlerContext,
    tool: str,
    fn: Callable[P, Awaitable[R]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """`fn(*args, **kwargs)` through the stage's tool `tool`, or directly when the stage
    lists no tools (the demo's naive run: a plain loop calls its clients as they are)."""
    if ctx.tools is None:
        return await fn(*args, **kwargs)
    return await ctx.tool(tool).call(fn, *args, **kwargs)


def _ticket(event: TaskEvent) -> dict[str, Any]:
    ticket: dict[str, Any] = json.loads(event.payload)
    return ticket


def _with(event: TaskEvent, ticket: dict[str, Any], **fields: Any) -> TaskEvent:
    """A copy of `event` whose payload is `ticket` plus `fields` (events are frozen)."""
    return dataclasses.replace(event, payload=json.dumps({**ticket, **fields}).encode())


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seconds_left(ctx: HandlerContext) -> float | None:
    """Real seconds until the run's deadline (negative once past); None if it has none."""
    return None if ctx.deadline_ms is None else (ctx.deadline_ms - _now_ms()) / 1000
