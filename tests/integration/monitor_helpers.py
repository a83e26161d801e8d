"""Helpers integration tests share: waiting for a condition, and an exposition whose
labels are in name order (so a test matches one spelling).

Owns those helpers; must not start anything (tests and fixtures do).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `condition` until it holds; returns when (time.monotonic()) it first held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def sorted_labels(exposition: str) -> str:
    """The exposition with each sample's labels in name order (prometheus_client keeps
    definition order), so tests can match one spelling."""

    def sort(match: re.Match[str]) -> str:
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2))
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(pairs))
        return f"{match.group(1)}{{{inner}}}"

    return re.sub(r"^(\w+)\{([^}]*)\}", sort, exposition, flags=re.MULTILINE)
