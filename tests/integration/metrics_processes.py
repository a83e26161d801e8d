"""Helpers for tests that scrape real streams processes: a workflow file with an intake
section, `python -m streams ...` subprocesses that are always stopped, free ports on a
chosen loopback address, scrapes, and sample sums from an exposition."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

from streams.kafka.admin import Admin, TopicWanted
from streams.topology import Topology, load_topology

from .process_helpers import PROC_HANDLER, REPO_ROOT

# Loopback, but not 127.0.0.1: a scrape that works here proves --metrics-host / --host
# were used for the bind.
OTHER_LOOPBACK = "127.0.0.2"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def workflow_file(admin: Admin, directory: Path) -> tuple[Topology, Path]:
    """plan -> act, two lanes, two partitions, a tool for plan, a small intake bound (so
    some runs are rejected); topics created."""
    name = f"m{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {
                "handler": PROC_HANDLER,
                "downstream": ["act"],
                "max_queue_age_s": 60,
                "tools": ["crm"],
                # Its retry families are exported too (the handler never fails).
                "retry": {"tiers": [5]},
            },
            "act": {"handler": PROC_HANDLER},
        },
        # A tool the plan workers hold (the handler never calls it): its series, breaker
        # state included, are exported all the same.
        "tools": {"crm": {"concurrency": 4, "rate": 50}},
        "intake": {"max_queued_runs": 5, "max_queued_per_tenant": 5},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology, path


@contextlib.contextmanager
def running(argv: list[str], log_path: Path, env: dict[str, str]) -> Iterator[None]:
    """Run `argv` (stdout and stderr to log_path) until the block ends; then SIGTERM,
    SIGKILL after 30 s. The log is printed so a failing test shows it."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        print(f"--- {log_path.name}\n{log_path.read_text(errors='replace')}")


def streams_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams", *args]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
