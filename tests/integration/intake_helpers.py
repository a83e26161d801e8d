"""Runs an Intake and its HTTP app on loopback for tests, with workflows made unique."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from streams.intake.http import create_app
from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import read_records
from streams.topology import Topology

from .workflows import make_workflow


def intake_workflow(admin: Admin, intake: dict[str, Any], **stages: dict[str, Any]) -> Topology:
    stages = stages or {"plan": {}}
    return make_workflow(admin, stages, intake=intake, lanes=["urgent", "standard", "background"])


@contextmanager
def running_intake(topology: Topology, client: ClientConfig, **options: Any) -> Iterator[Intake]:
    intake = Intake(topology, client, **options).start()
    try:
        yield intake
    finally:
        intake.close()


@contextmanager
def http_server(intake: Intake) -> Iterator[str]:
    """Serve the intake on a free loopback port; yields its base URL."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (else ~40 ms Nagle delays).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(intake), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def published(client: ClientConfig, topology: Topology, topics: list[str]) -> int:
    """How many records the given topics of the workflow hold (read_committed)."""
    specs = topology.all_topics()
    return sum(
        len(read_records(client, t, specs[t].partitions, expect=10**9, timeout_s=1.0))
        for t in topics
    )
