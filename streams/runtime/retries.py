"""Turns a failed handler call into its retry or escalation write, under the stage's retry
policy and budgets; the write is then sent and acknowledged like any other outcome
(invariant 1: the record's offset commits only after it).

Owns the retry-tier and escalation records (their value, key and headers), the stage's and
its tools' retry budgets and the per-run retry count carried in the event's trace context.
Must not decide policy (streams.policy.retry), send anything (the OutcomeRouter does) or
touch Kafka.

A retry record is the consumed TaskEvent with `attempt` + 1 (run id, idempotency key and
trace context kept), keyed by run id, on the tier topic its delay rounds up to, with
headers naming the stage, the input topic to return to and the due time (RETRY_*_HEADER).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streams.errors import ToolError
from streams.escalations import EscalationCodec, EscalationRecord
from streams.events import TaskEvent, TaskEventCodec
from streams.policy.retry import RetryBudget, RetryPlan, RetryPolicy, exhausted, plan_retry
from streams.runtime.context import Emit
from streams.runtime.retry_metrics import RetryMetrics
from streams.topology import Stage, Topology
from streams.types import DeadLetterReason, Record

RETRY_STAGE_HEADER = "streams.retry.stage"
RETRY_TOPIC_HEADER = "streams.retry.topic"
RETRY_DUE_HEADER = "streams.retry.due_at_ms"
REASON_HEADER = "streams.reason"
#: Trace-context key counting a run's retries across all its stages (the per-run budget).
RUN_RETRIES_KEY = "streams.run_retries"

#: Failures the policy may retry; the others (expired, undecodable, an emit refused, a
#: DeadLetter signal) are dead-lettered as before.
_RETRIABLE_REASONS: frozenset[DeadLetterReason] = frozenset(
    {
        "handler_error",
        "timeout",
        "retry_requested",
        "escalated",
        "tool_unavailable",
        "tool_saturated",
        "tool_timeout",
    }
)


@dataclass(frozen=True, slots=True)
class Routed:
    """`emits`: the retry or escalation write (the record's outcome); otherwise dead-letter
    it with `reason`."""

    emits: Sequence[Emit] = ()
    reason: DeadLetterReason | None = None
    kind: str = "dead_letter"  # retry | escalate | dead_letter


class Retrier:
    def __init__(
        self,
        topology: Topology,
        stage: Stage,
        policy: RetryPolicy,
        codec: TaskEventCodec,
        metrics: RetryMetrics,
        *,
        now_ms: Callable[[], int],
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._workflow = topology.workflow
        self._stage = stage.name
        self._policy = policy
        self._codec = codec
        self._escalations = EscalationCodec()
        self._metrics = metrics
        self._now_ms = now_ms
        self._draw = draw
        self._tier_topics = topology.retry_topics
        self.escalations_topic = topology.escalations_topic
        #: Topics a decided record may be written to besides its emits' (for metrics).
        self.outcome_topics = frozenset((*self._tier_topics.values(), self.escalations_topic))
        self._stage_budget = RetryBudget(policy.budget)
        # One per tool the stage calls: a tool's retries are judged against the first
        # attempts that may call it (a ratio budget sums across workers, so per worker
        # is enough for the fleet-wide ratio).
        self._tool_budgets = {name: RetryBudget(policy.budget) for name in stage.tools}

    def attempted(self, event: TaskEvent) -> None:
        """A handler ran on `event`: first attempts grow the budgets."""
        if event.attempt == 0:
            now = self._now_ms() / 1000
            self._stage_budget.first_attempt(now)
            for budget in self._tool_budgets.values():
                budget.first_attempt(now)

    def route(
        self,
        record: Record,
        event: TaskEvent,
        status: str,
        error: BaseException | None,
        reason: DeadLetterReason,
    ) -> Routed:
        if reason not in _RETRIABLE_REASONS:
            return Routed(reason=reason)
        now_ms = self._now_ms()
        run_retries = _run_retries(event)
        plan = plan_retry(
            self._policy, error, status, attempt=event.attempt, run_retries=run_retries,
            now_ms=now_ms, deadline_ms=event.deadline_ms, draw=self._draw,
        )  # fmt: skip
        if plan.action == "retry" and not self._spend(error, now_ms / 1000):
            plan = exhausted(self._policy, "retry_budget_exhausted")
        elif plan.action == "dead_letter" and plan.reason == "retry_budget_exhausted":
            self._metrics.count_budget_exhausted("run")
        return self._carry_out(plan, record, event, error, reason, run_retries, now_ms)

    def _spend(self, error: BaseException | None, now: float) -> bool:
        tool = error.tool if isinstance(error, ToolError) else None
        tool_budget = self._tool_budgets.get(tool) if tool is not None else None
        if tool_budget is not None and not tool_budget.try_spend(now):
            self._metrics.count_budget_exhausted("tool")
            return False
        if not self._stage_budget.try_spend(now):
            self._metrics.count_budget_exhausted("stage")
            return False
        return True

    def _carry_out(
        self,
        plan: RetryPlan,
        record: Record,
        event: TaskEvent,
        error: BaseException | None,
        reason: DeadLetterReason,
        run_retries: int,
        now_ms: int,
    ) -> Routed:
        if plan.action == "retry":
            self._metrics.count_retry(plan.tier_s, reason)
            return Routed(
                [self._retry_write(plan, record, event, reason, run_retries)], kind="retry"
            )
        if plan.action == "escalate":
            why = plan.reason or "escalated"
            self._metrics.count_escalation(why)
            escalation = EscalationRecord.for_record(
                record,
                workflow=self._workflow,
                run_id=event.run_id,
                stage=self._stage,
                attempts=event.attempt + 1,
                reason=why,
                error=error,
                escalated_at_ms=now_ms,
            )
            value = self._escalations.encode(escalation)
            headers = ((REASON_HEADER, why.encode()),)
            emit = Emit(self.escalations_topic, value, event.run_id.encode(), headers)
            return Routed([emit], kind="escalate")
        if plan.action == "dead_letter" and plan.reason is not None:
            if plan.reason == "retry_budget_exhausted":
                return Routed(reason="retry_budget_exhausted")
            return Routed(reason="expired")
        return Routed(reason=reason)

    def _retry_write(
        self, plan: RetryPlan, record: Record, event: TaskEvent, reason: str, run_retries: int
    ) -> Emit:
        trace = dict(event.trace_context)
        trace[RUN_RETRIES_KEY] = str(run_retries + 1)
        retried = dataclasses.replace(event, attempt=event.attempt + 1, trace_context=trace)
        headers = (
            *(h for h in record.headers if not h[0].startswith("streams.retry.")),
            (RETRY_STAGE_HEADER, self._stage.encode()),
            (RETRY_TOPIC_HEADER, record.topic.encode()),
            (RETRY_DUE_HEADER, str(plan.due_ms).encode()),
            (REASON_HEADER, reason.encode()),
        )
        key = record.key or event.run_id.encode()
        tier_topic = self._tier_topics[plan.tier_s]
        return Emit(tier_topic, self._codec.encode(retried, topic=tier_topic), key, headers)


def _run_retries(event: TaskEvent) -> int:
    raw = event.trace_context.get(RUN_RETRIES_KEY)
    try:
        return max(0, int(raw)) if raw is not None else 0
    except ValueError:
        return 0
