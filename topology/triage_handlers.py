"""Handlers for topology/triage.yaml: support-ticket triage, a template to copy.

A run carries one ticket as JSON, {"ticket": ..., "subject": ...}; each stage adds fields
and emits a changed copy: plan -> retrieve -> act -> approve (a person, `kind: review`) ->
finish, then the background stage enrich summarises finished runs. The dependencies are
simulated (topology/sim.py); swap `deps` for real clients and the handlers stay as they are.

Every dependency call goes through the tool triage.yaml declares for it (`ctx.tool`:
rate and concurrency ceilings, timeout, breaker) when the stage lists it; the demo's naive
run drops the tools, and there the same handlers call the dependency directly, as a plain
consumer loop would: and, as a plain loop does, try a failed call again at once, up to
NAIVE_TRIES times in all.

Every handler first records itself in the WorkLedger, which counts work done on runs
already past their deadline: the waste that backpressure is meant to avoid. A handler that
raises is retried by streams under triage.yaml's `retry:` policy (through the retry-tier
topics, within budgets), escalated when its tries run out, or dead-lettered when the
failure is not one that retries.
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
#: Customer tiers whose refunds a person confirms; the ladder's `review_refund_tiers` knob
#: widens it (triage.yaml `essential`).
REVIEW_REFUND_TIERS = ("enterprise",)
#: Documents retrieve asks for; the ladder's `retrieval_k` knob lowers it.
RETRIEVAL_K = 3
HURRY_BELOW_S = 10.0  # simulated seconds left before the deadline that count as "little"
#: A plain loop's retry: the call again at once, this many tries in all (Google SRE's
#: "at most 3 attempts": the worst case is 3x the load on a sick dependency).
NAIVE_TRIES = 3

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
    # Degrade on purpose when the run cannot afford the full prompt: background work, a
    # deadline close enough that a faster, rougher answer beats a late one, or the
    # workflow's degradation level asking for it (triage.yaml `lean`).
    left = _seconds_left(ctx)
    hurried = (
        ctx.lane == "background"
        or (left is not None and left < scaled(HURRY_BELOW_S))
        or ctx.degradation.knob("prompt", "full") == "short"
    )
    question = f"Ticket {ticket['ticket']}: {ticket['subject']}\nAnswer with one of: "
    prompt = ("" if hurried else PLAYBOOK) + question + ", ".join(ACTIONS) + "."
    action = await _call(ctx, "llm", deps.llm.complete, prompt)
    ctx.emit(_with(event, ticket, action=action, prompt="short" if hurried else "full"))


async def retrieve(event: TaskEvent, ctx: HandlerContext) -> None:
    """Gather context: knowledge-base articles and the customer record, concurrently."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    k = ctx.degradation.knob("retrieval_k", RETRIEVAL_K)
    k = k if isinstance(k, int) else RETRIEVAL_K
    docs, customer = await asyncio.gather(
        _call(ctx, "vector_search", deps.vector.search, str(ticket["subject"]), k=k),
        _call(ctx, "crm_read", deps.crm.read, str(ticket["ticket"])),
    )
    ctx.emit(_with(event, ticket, docs=docs, tier=customer["tier"]))


async def act(event: TaskEvent, ctx: HandlerContext) -> None:
    """Apply the action in the CRM: the workflow's bottleneck (rate-limited writes)."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    tiers = ctx.degradation.knob("review_refund_tiers", REVIEW_REFUND_TIERS)
    tiers = tiers if isinstance(tiers, list | tuple) else REVIEW_REFUND_TIERS
    needs_person = ticket["action"] == "refund" and ticket["tier"] in tiers
    status = "pending_approval" if needs_person else "done"
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


async def finish(event: TaskEvent, ctx: HandlerContext) -> None:
    """After review (the approve stage is a person: `kind: review`): record the decision
    the review stage put in the record's headers, and finish the run."""
    deps.ledger.record(ctx.stage, event)
    ticket = _ticket(event)
    headers = dict(ctx.record.headers or ())
    decision = (headers.get("streams.review.decision") or b"").decode()
    reviewer = (headers.get("streams.review.by") or b"").decode()
    if ticket["status"] == "pending_approval":
        # Declined (or nobody in time, on_timeout: decline): the change stays pending in
        # the CRM for a person to pick up later; the run is finished either way.
        ticket["status"] = "approved" if decision == "approve" else "pending_approval"
    # The run is finished: its deadline no longer applies to background follow-up work
    # (enrich would otherwise drop it as expired). It stays in the payload for reporting.
    done = _with(
        event, ticket, reviewed_by=reviewer, deadline_ms=event.deadline_ms,
        finished_at_ms=_now_ms(),
    )  # fmt: skip
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
        return await call_plainly(fn, *args, **kwargs)
    return await ctx.tool(tool).call(fn, *args, **kwargs)


async def call_plainly(fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
    """What a plain consumer loop does: call, and on any failure call again at once, up to
    NAIVE_TRIES times in all; the last failure is the handler's. No delay, no budget."""
    for _ in range(NAIVE_TRIES - 1):
        try:
            return await fn(*args, **kwargs)
        except Exception:  # a plain loop retries whatever failed
            continue
    return await fn(*args, **kwargs)


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
