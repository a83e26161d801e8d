"""Stops a process whose loop cannot stop itself once the cluster refuses its credentials.

A client polled by its loop raises AuthorizationFailed after REFUSED_GRACE_S
(ClientHooks.raise_if_refused), and the loop stops with one line. But the loop can be stuck
inside a client call the refusal keeps from ever returning: a synchronous commit that met
the group coordinator going away (its broker shutting down) waits, inside librdkafka, for
the next coordinator, and a cluster that now refuses the credentials never gives one. Every
later call on that consumer waits behind it (confluent-kafka serializes the calls on one
client), so no poll comes to raise. Seen in CI: a worker stuck there 270 s after a password
rotation, in 3 of 4 runs on this machine. The watchdog gives the loop STUCK_GRACE_S more
than the grace, then prints the same one line and exits 1: nothing the process could still
do reaches the cluster, and what it has not committed is redone by the next owner.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from streams.kafka.client_logs import PROCESS_LOGS, REFUSED_GRACE_S, ClientLogs, refusal_message

#: How much longer than REFUSED_GRACE_S the loop has to stop by itself.
STUCK_GRACE_S = 15.0
CHECK_INTERVAL_S = 1.0


def overdue_refusal(logs: ClientLogs, cluster: str, what: str) -> str | None:
    """The line to stop with, once `cluster` has refused the credentials for longer than
    the loop's own grace plus STUCK_GRACE_S; None before that or once a broker answers."""
    refused = logs.refused_for(cluster)
    if refused is None or refused[0] < REFUSED_GRACE_S + STUCK_GRACE_S:
        return None
    return refusal_message(what, *refused)


class RefusalWatchdog:
    """A daemon thread checking overdue_refusal() every CHECK_INTERVAL_S."""

    def __init__(
        self,
        cluster: str,
        what: str,
        *,
        logs: ClientLogs = PROCESS_LOGS,
        exit_process: Callable[[int], object] = os._exit,
        stderr: TextIO | None = None,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._cluster = cluster
        self._what = what
        self._logs = logs
        # os._exit, not sys.exit: the stuck call holds the client, and a normal exit would
        # wait on it while closing the client.
        self._exit = exit_process
        self._stderr = stderr
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refusal-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            line = overdue_refusal(self._logs, self._cluster, self._what)
            if line is not None:
                stream = self._stderr or sys.stderr
                print(f"error: {line}", file=stream, flush=True)
                self._exit(1)
                return
