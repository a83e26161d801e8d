"""The fleet-wide share rule: how much of a tool's ceilings one worker process may use,
without a coordination store.

Owns the rule; must not count partitions or talk to Kafka (the worker passes its shares).

    share of a stage  = partitions of the stage assigned here / the stage's partitions
    process rate      = Σ over the stages here using the tool: rate * share / stages_using
    process burst     = the same split of burst, at least 1 token (else no call ever goes)
    process slots     = floor(concurrency * Σ shares / stages_using), at least 1 while any share

A tool listed by several stages is split evenly between them (`stages_using`), since each
stage's workers see only their own group. Shares are re-split on every rebalance, so the
fleet's shares add up to at most 1 per stage: the rate ceiling holds fleet-wide. Worst
cases, documented in the README: during a rebalance a worker keeps its old share until its
revoked calls finish (bounded by the revoke budget) while the new owner already has its
new one, so for that moment the fleet may run at up to rate * (old share + new share);
and the minimums (1 token of burst, 1 slot) each lift the fleet's bound by one per worker
whose share would round below them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolCeilings:
    """A tool's fleet-wide ceilings as declared (None: unlimited)."""

    rate_per_s: float | None
    burst: float | None
    concurrency: int | None
    stages_using: int


@dataclass(frozen=True, slots=True)
class ProcessLimits:
    """This process's part of the ceilings (None: unlimited)."""

    rate_per_s: float | None
    burst: float | None
    concurrency: int | None


def stage_share(assigned: int, total: int) -> float:
    """This worker's fraction of a stage's partitions (0 with none known)."""
    if total <= 0 or assigned <= 0:
        return 0.0
    return min(1.0, assigned / total)


def process_limits(ceilings: ToolCeilings, shares: Mapping[str, float]) -> ProcessLimits:
    """`shares`: for each stage in this process that uses the tool, its stage_share()."""
    fraction = min(1.0, sum(shares.values()) / max(1, ceilings.stages_using))
    rate = burst = None
    if ceilings.rate_per_s is not None:
        rate = ceilings.rate_per_s * fraction
        burst = max(1.0, (ceilings.burst or 1.0) * fraction)
    slots = None
    if ceilings.concurrency is not None:
        slots = max(1, math.floor(ceilings.concurrency * fraction)) if fraction > 0 else 0
    return ProcessLimits(rate, burst, slots)
