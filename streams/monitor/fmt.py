"""Short human forms of the monitor's numbers (ages, rates), shared by the terminal view
and the status page. Owns formatting only."""

from __future__ import annotations

from collections.abc import Mapping


def age(seconds: float) -> str:
    """45s, 2m05s, 1h02m, 3d04h: short enough for a narrow column."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def counts(by_key: Mapping[str, float], *, unit: str = "") -> str:
    """ "downstream 3, lane 1" (largest first), "-" for nothing."""
    if not by_key:
        return "-"
    ordered = sorted(by_key.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {_number(v)}{unit}" for k, v in ordered)


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
