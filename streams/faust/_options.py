"""Tuning of a governed faust stage that is not part of the topology: cadences, the metrics
endpoint, the client settings of streams' own readers. Owns the defaults; must not read
the environment."""

from __future__ import annotations

from dataclasses import dataclass

from streams.kafka.client_config import ClientConfig


@dataclass(frozen=True, slots=True)
class FaustOptions:
    #: How often downstream lag, age and latency are read (on a thread of their own).
    pressure_refresh_s: float = 0.5
    #: How often the stage publishes its pressure report and refreshes its gauges.
    report_interval_s: float = 1.0
    #: How often the pause verdict is taken and applied to faust's consumer.
    control_interval_s: float = 0.1
    stall_after_s: float = 30.0
    #: None: no metrics endpoint; 0: any free port. Loopback unless the deployer says.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: Names the worker in pressure reports; None: a random one.
    worker_id: str | None = None
    #: The settings streams' readers and the report producer use; None: the faust app's
    #: broker list (faust's own credentials are not translated: pass them here).
    client: ClientConfig | None = None
