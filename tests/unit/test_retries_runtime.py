"""The retry router (streams.runtime.retries) on a fake clock: the retry record it writes
(tier topic, attempt + 1, identity and trace context kept, headers), budgets per stage and
per tool, the per-run count carried across stages, and escalation records."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from streams.errors import ToolUnavailable
from streams.escalations import EscalationCodec
from streams.events import TaskEvent, TaskEventCodec, new_task_event
from streams.runtime.retries import RUN_RETRIES_KEY, Retrier
from streams.runtime.retry_metrics import RetryMetrics
from streams.signals import Escalate
from streams.topology import Topology, parse_topology
from streams.types import Record

CODEC = TaskEventCodec()


def _topology(retry: dict[str, object]) -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "tools": {"crm": {}},
            "retry": retry,
            "stages": {"act": {"handler": "topology.example_handlers:act", "tools": ["crm"]}},
        },
        "inline",
    )


def _retrier(retry: dict[str, object], now_ms: list[int]) -> tuple[Retrier, CollectorRegistry]:
    topology = _topology(retry)
    stage = topology.stages["act"]
    registry = CollectorRegistry()
    metrics = RetryMetrics(registry, workflow="wf", stage="act")
    assert stage.retry is not None
    retrier = Retrier(
        topology,
        stage,
        stage.retry,
        CODEC,
        metrics,
        now_ms=lambda: now_ms[0],
        draw=lambda: 0.5,
    )
    return retrier, registry


def _record(attempt: int = 0, run_retries: int | None = None) -> tuple[Record, TaskEvent]:
    trace = {"traceparent": "00-abc-def-01"}
    if run_retries is not None:
        trace[RUN_RETRIES_KEY] = str(run_retries)
    event = new_task_event(
        workflow="wf", stage="act", tenant="t", lane="standard", payload=b"{}",
        now_ms=1_000, idempotency_key="idem-1", trace_context=trace,
    )  # fmt: skip
    event = dataclasses.replace(event, attempt=attempt)
    value = CODEC.encode(event)
    return Record(
        "wf.act.standard", 1, 7, event.run_id.encode(), value, 1_000, (("trace.x", b"y"),)
    ), event


def test_a_retry_record_keeps_identity_and_counts_the_attempt_and_run_retries() -> None:
    retrier, registry = _retrier({"tiers": [5, 30]}, [10_000])
    record, event = _record(attempt=0, run_retries=2)
    retrier.attempted(event)
    routed = retrier.route(record, event, "error", ToolUnavailable("crm", 12.0), "tool_unavailable")
    assert routed.kind == "retry"
    [emit] = routed.emits
    assert emit.topic == "wf.retry.30s"  # 12 s asked by the breaker rounds up to 30
    assert emit.key == record.key
    retried = CODEC.decode(emit.value)
    assert retried.attempt == 1
    assert (retried.run_id, retried.idempotency_key) == (event.run_id, "idem-1")
    assert retried.trace_context["traceparent"] == "00-abc-def-01"
    assert retried.trace_context[RUN_RETRIES_KEY] == "3"
    headers = dict(emit.headers)
    assert headers["streams.retry.stage"] == b"act"
    assert headers["streams.retry.topic"] == b"wf.act.standard"
    assert headers["streams.retry.due_at_ms"] == b"22000"
    assert headers["streams.reason"] == b"tool_unavailable"
    assert headers["trace.x"] == b"y"
    sample = registry.get_sample_value(
        "streams_retries_total",
        {"workflow": "wf", "stage": "act", "tier": "30", "reason": "tool_unavailable"},
    )
    assert sample == 1.0


def test_the_tool_budget_refuses_before_the_stage_budget_and_is_counted() -> None:
    retrier, registry = _retrier(
        {"budget": {"ratio": 0.0, "min_retries": 1}, "on_exhausted": "dead_letter"}, [0]
    )
    record, event = _record()
    first = retrier.route(record, event, "error", ToolUnavailable("crm", None), "tool_unavailable")
    second = retrier.route(record, event, "error", ToolUnavailable("crm", None), "tool_unavailable")
    assert first.kind == "retry"
    assert (second.kind, second.reason) == ("dead_letter", "retry_budget_exhausted")
    assert (
        registry.get_sample_value(
            "streams_retry_budget_exhausted_total",
            {"workflow": "wf", "stage": "act", "scope": "tool"},
        )
        == 1.0
    )


def test_unretriable_reasons_pass_through_unchanged() -> None:
    retrier, _ = _retrier({}, [0])
    record, event = _record()
    routed = retrier.route(record, event, "error", ValueError("x"), "emit_error")
    assert (routed.emits, routed.reason) == ((), "emit_error")
    plain = retrier.route(record, event, "error", ValueError("x"), "handler_error")
    assert (plain.emits, plain.reason) == ((), "handler_error")


def test_escalate_writes_an_escalation_keyed_by_run_with_its_reason() -> None:
    retrier, registry = _retrier({}, [5_000])
    record, event = _record(attempt=1)
    routed = retrier.route(record, event, "error", Escalate("call the customer"), "escalated")
    [emit] = routed.emits
    assert emit.topic == "wf.escalations" and emit.key == record.key
    assert dict(emit.headers)["streams.reason"] == b"escalated"
    escalation = EscalationCodec().decode(emit.value)
    assert (escalation.reason, escalation.note, escalation.attempts) == (
        "escalated",
        "call the customer",
        2,
    )
    assert escalation.event == record.value and escalation.escalated_at_ms == 5_000
    assert (
        registry.get_sample_value(
            "streams_escalations_total", {"workflow": "wf", "stage": "act", "reason": "escalated"}
        )
        == 1.0
    )
