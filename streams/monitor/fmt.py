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
    return ", ".join(f"{k} {number(v)}{unit}" for k, v in ordered)


def number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def rate(per_s: float) -> str:
    """ "0.005/s", "2.5/s": three significant digits, enough for a clear rate."""
    return f"{per_s:.3g}/s"


def tiers(by_tier: Mapping[str, float]) -> str:
    """ "tier 1s 4, 30s 2" (shortest tier first), "" for nothing."""
    if not by_tier:
        return ""
    ordered = sorted(by_tier.items(), key=lambda kv: float(kv[0]) if kv[0] != "?" else 1e18)
    return "tier " + ", ".join(f"{t}s {number(n)}" for t, n in ordered)
