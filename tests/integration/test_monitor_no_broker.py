"""`streams monitor` with no broker to talk to says so in one line and exits 1 (no
traceback, no hang)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .process_helpers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_no_broker_is_a_one_line_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    done = subprocess.run(
        [sys.executable, "-m", "streams", "monitor", "topology/triage.yaml", "--once", "--json"],
        capture_output=True, text=True, timeout=80, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"no Kafka broker answered at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
