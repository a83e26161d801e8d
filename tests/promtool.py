"""promtool (Debian's `prometheus` package) for tests: found on PATH, or the test fails and
says what to install. STREAMS_ALLOW_MISSING_PROMTOOL=1 makes that a skip instead, for a
machine that cannot install it; CI installs the package (.ci/run) and never sets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool not found: install it with `apt-get install prometheus` (Debian)"
    if os.environ.get("STREAMS_ALLOW_MISSING_PROMTOOL"):
        pytest.skip(message)
    pytest.fail(message)


def run_promtool(*args: str | Path, stdin: str | None = None) -> tuple[int, str]:
    """(exit code, stdout and stderr together) of one promtool call."""
    result = subprocess.run(
        [promtool(), *map(str, args)],
        input=None if stdin is None else stdin.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode().strip()


def check_metrics(text: str) -> str:
    """promtool's complaints about a metrics exposition; empty when it has none."""
    code, output = run_promtool("check", "metrics", stdin=text)
    if code != 0 and not output:
        return f"promtool exited {code}"
    return output
