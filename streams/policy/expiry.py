"""Whether a queued request has expired, and why; callers dead-letter it as "expired".

Owns the age and deadline arithmetic; must not read a clock (callers pass wall time).
"""

from __future__ import annotations

import math
from typing import Literal

ExpiryReason = Literal["queue_age", "deadline"]


def queue_age_s(enqueued_ms: int, now: float) -> float:
    """Seconds since ``enqueued_ms`` (epoch milliseconds) at wall time ``now``.

    Clamped at 0: a producer whose clock runs ahead of ours would otherwise report a
    negative age, which no threshold comparison should see.
    """
    return max(0.0, now - enqueued_ms / 1000.0)


def expiry_reason(
    *, enqueued_ms: int, deadline_ms: int | None, max_queue_age_s: float, now: float
) -> ExpiryReason | None:
    """``"deadline"`` once ``deadline_ms <= now`` (in ms), else ``"queue_age"`` once the
    record has waited longer than ``max_queue_age_s``, else None.

    The deadline wins when both apply: it is the caller's explicit promise, and the more
    specific reason is the more useful one in the dead-letter record.
    ``max_queue_age_s = math.inf`` disables the age check.
    """
    if math.isnan(max_queue_age_s) or max_queue_age_s < 0:
        raise ValueError(f"max_queue_age_s must be >= 0, got {max_queue_age_s}")
    if deadline_ms is not None and deadline_ms <= now * 1000.0:
        return "deadline"
    if queue_age_s(enqueued_ms, now) > max_queue_age_s:
        return "queue_age"
    return None
