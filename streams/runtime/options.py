"""Tuning of a stage worker that is not part of the topology: cadences, budgets, ports."""

from __future__ import annotations

from dataclasses import dataclass

from streams.kafka.client_config import GroupProtocol


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    poll_batch: int = 500  # records per consume() call
    idle_poll_s: float = 0.05  # consume() timeout when nothing is in flight
    busy_poll_s: float = 0.002  # consume() timeout while handlers run (completions wait)
    commit_interval_s: float = 0.5
    pressure_refresh_s: float = 0.5
    report_interval_s: float = 1.0
    shutdown_grace_s: float = 30.0
    revoke_budget_s: float = 10.0  # Quix bounds revoke work at 0.2 x max.poll.interval.ms
    stall_after_s: float = 30.0
    # A poll loop or handler event loop that has not turned for this long is logged, with
    # where it is stuck (streams.runtime.loop_watch); 0: not watched.
    loop_stall_s: float = 2.0
    group_protocol: GroupProtocol = "classic"
    max_poll_interval_ms: int = 60_000
    metrics_port: int | None = None  # None: no HTTP endpoint; 0: any free port
    # Loopback unless the deployer says otherwise: "0.0.0.0" lets a Prometheus in another
    # container or pod scrape the worker.
    metrics_host: str = "127.0.0.1"
    # Stable id: names the transactional producer (required for exactly-once stages) and
    # the pressure reports; None: a random one (at-least-once only).
    worker_id: str | None = None
    handler_threads: int = 32  # pool for plain-function handlers
    # Outcomes sent and not yet acknowledged, across partitions, before dispatch waits.
    max_unacknowledged: int = 10_000
