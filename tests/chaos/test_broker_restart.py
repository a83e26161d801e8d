"""Chaos: the broker stops for a minute mid-flow and comes back with the same data.

A real broker of its own (own STREAMS_HOME, own ports), a `streams worker` process and an
Intake: the worker must ride the outage out unaided (still running, nothing lost: every
input run id ends in the output or the dead letters) and the intake must accept again once
the broker is back. STREAMS_CHAOS_OUTAGE_S sets the outage (default 60 s).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from streams.config import Settings
from streams.errors import StreamsError
from streams.intake.requests import RunRequest
from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.local_broker import LocalBroker
from streams.testing import publish
from tests.integration.process_helpers import TopicReader, worker_processes, write_workflow
from tests.integration.workflows import events

OUTAGE_S = float(os.environ.get("STREAMS_CHAOS_OUTAGE_S", "60"))
STAGE = "work"
PARTITIONS = 3

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150 + 1.5 * OUTAGE_S)]


def _accepted(intake: Intake, timeout_s: float) -> str | None:
    """The run id of an accepted submission, or None if it was not accepted."""
    try:
        decision = intake.submit(RunRequest(tenant="t", payload=b"{}"), timeout_s=timeout_s)
    except (StreamsError, TimeoutError):
        return None
    return decision.run_id if decision.outcome == "accepted" else None


def test_worker_and_intake_ride_out_a_broker_restart(own_broker: Settings, tmp_path: Path) -> None:
    broker = LocalBroker(own_broker)
    state, _ = broker.start()
    client = ClientConfig(state.bootstrap, client_id="chaos")
    try:
        topology, topology_file = write_workflow(
            Admin(client), tmp_path, {STAGE: {"concurrency": 8}}, partitions=PARTITIONS
        )
        input_topic = topology.stages[STAGE].input_topics_by_lane["standard"]
        with (
            worker_processes(state.bootstrap, tmp_path) as procs,
            TopicReader(client, topology.completed_topic, PARTITIONS) as out,
        ):
            worker = procs.start(topology_file, STAGE, env={"PROC_HANDLER_SLEEP_S": "0.05"})
            intake = Intake(topology, client, ack_timeout_s=2.0).start()
            try:
                before = events(topology, STAGE, 300)
                publish(client, input_topic, before)
                wanted = {e.run_id for e in before}
                for _ in range(10):
                    run_id = _accepted(intake, 10.0)
                    assert run_id is not None, "the intake did not accept before the outage"
                    wanted.add(run_id)
                assert out.wait_until(lambda r: len(r.records) >= 20, 60), procs.logs()
                assert len(set(out.run_ids())) < len(wanted), "all done before the outage"

                broker.stop()
                stopped = time.monotonic()
                while time.monotonic() - stopped < OUTAGE_S:
                    assert worker.alive, f"worker exited during the outage\n{procs.logs()}"
                    time.sleep(1.0)
                again, _ = broker.start()
                assert again.bootstrap == state.bootstrap

                recovered = None
                deadline = time.monotonic() + 60
                while recovered is None and time.monotonic() < deadline:
                    recovered = _accepted(intake, 5.0)
                    if recovered is None:
                        time.sleep(1.0)
                assert recovered is not None, "the intake did not accept after the broker came back"
                wanted.add(recovered)

                reader_ok = out.wait_until(lambda r: wanted <= set(r.run_ids()), 90)
                assert worker.alive, f"worker exited after the outage\n{procs.logs()}"
                dlq = topology.dead_letter_topic
                dead = TopicReader(client, dlq, topology.all_topics()[dlq].partitions)
                dead.read_to_end(Admin(client))
                dead.close()
                missing = wanted - set(out.run_ids()) - set(dead.run_ids())
                assert reader_ok or not missing, f"{len(missing)} runs lost\n{procs.logs()}"
            finally:
                intake.close()
            worker.signal(signal.SIGTERM)
            assert worker.wait(60) == 0, procs.logs()
    finally:
        broker.stop()
