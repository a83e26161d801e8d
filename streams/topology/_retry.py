"""Owns the `retry:` sections once validated: a stage's RetryPolicy from the workflow's
defaults and its own overrides (key by key, budget included), and the checks that span
keys (tiers ascending, cap at least base, exception names well formed).

Must not decide anything at run time (streams.policy.retry does) nor word pydantic errors.
"""

from __future__ import annotations

import re
from typing import Any

from streams.policy.retry import RetryBudgetConfig, RetryPolicy
from streams.topology._errors import KeyPath, Problem
from streams.topology._model import RetryBudgetIn, RetryIn, StageIn

_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def resolve_retry(workflow: RetryIn | None, name: str, stage: StageIn) -> RetryPolicy | None:
    """The stage's policy, or None when it does not retry (no section applies, the stage
    says `retry: null`, or it reads an `input_topic`: retries re-enter a stage through its
    own lane topics, and another topic is not its own to write to)."""
    if "retry" in stage.model_fields_set:
        if stage.retry is None:
            return None
        if stage.input_topic is not None:
            raise Problem(
                ("stages", name, "retry"),
                f"a stage reading input_topic {stage.input_topic!r} cannot retry: retries "
                "re-enter a stage through its own lane topics; remove retry",
            )
        if workflow is None:
            return _policy(stage.retry, ("stages", name, "retry"))
        merged = _merge(workflow, stage.retry)
        return _policy(merged, ("stages", name, "retry"))
    if workflow is None or stage.input_topic is not None:
        return None
    return _policy(workflow, ("retry",))


def _merge(defaults: RetryIn, own: RetryIn) -> RetryIn:
    values: dict[str, Any] = {k: getattr(defaults, k) for k in RetryIn.model_fields}
    values.update({k: getattr(own, k) for k in own.model_fields_set})
    budget: dict[str, Any] = {k: getattr(defaults.budget, k) for k in RetryBudgetIn.model_fields}
    if "budget" in own.model_fields_set:
        budget.update({k: getattr(own.budget, k) for k in own.budget.model_fields_set})
    values["budget"] = RetryBudgetIn.model_construct(**budget)
    return RetryIn.model_construct(**values)


def _policy(given: RetryIn, at: KeyPath) -> RetryPolicy:
    tiers = given.tiers
    if not tiers:
        raise Problem((*at, "tiers"), "must list at least one tier (seconds)")
    if any(t <= 0 for t in tiers) or tiers != sorted(set(tiers)):
        raise Problem(
            (*at, "tiers"), f"must be positive whole seconds, strictly ascending, got {tiers}"
        )
    if given.cap_s < given.base_s:
        raise Problem(
            (*at, "cap_s"), f"must be at least base_s ({given.base_s}), got {given.cap_s}"
        )
    for key in ("retry_on", "never_retry"):
        for i, ref in enumerate(getattr(given, key)):
            if not _CLASS_NAME.fullmatch(ref):
                raise Problem(
                    (*at, key, i),
                    "must be an exception class name (matched against the raised "
                    f"exception's classes, e.g. ConnectionError), got {ref!r}",
                )
    b = given.budget
    return RetryPolicy(
        max_attempts=given.max_attempts,
        base_s=given.base_s,
        cap_s=given.cap_s,
        tiers_s=tuple(tiers),
        retry_on=tuple(given.retry_on),
        never_retry=tuple(given.never_retry),
        on_exhausted=given.on_exhausted,
        budget=RetryBudgetConfig(
            ratio=b.ratio,
            min_retries=b.min_retries,
            window_s=b.window_s,
            max_run_retries=b.max_run_retries,
        ),
    )
