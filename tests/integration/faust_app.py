"""A faust app governed by streams.faust, run by faust's own driver in a subprocess
(`python -m tests.integration.faust_app worker --web-port N`) for the faust tests.

Everything it needs comes from the environment the test sets: the topology file and the
stage (the app id is the stage's consumer group), the broker, a data dir, a metrics port,
a file that lists every run id the agent was handed, how long the agent works on one, and
a payload it raises on, whether it emits, and faust's fetch batch and stream buffer sizes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import faust

from streams.events import TaskEvent
from streams.faust import FaustOptions, govern
from streams.topology import load_topology

topology = load_topology(Path(os.environ["FAUST_TEST_TOPOLOGY"]))
stage_name = os.environ["FAUST_TEST_STAGE"]
seen_file = Path(os.environ["FAUST_TEST_SEEN"])
work_s = float(os.environ.get("FAUST_TEST_WORK_S", "0"))
#: The agent raises on an event with this payload (the agent's own bug, say).
fail_on = os.environ.get("FAUST_TEST_FAIL_ON", "").encode()
#: "0": the agent emits nothing (the run ends at this stage).
emits = os.environ.get("FAUST_TEST_EMIT", "1") == "1"

app = faust.App(
    topology.stages[stage_name].consumer_group,
    broker=f"kafka://{os.environ['FAUST_TEST_BOOTSTRAP']}",
    datadir=os.environ["FAUST_TEST_DATADIR"],
    web_port=int(os.environ["FAUST_TEST_WEB_PORT"]),
    # Small buffers by default: what faust already fetched still reaches the agent after
    # a pause. Large ones: a pause lands in the middle of a fetched batch.
    stream_buffer_maxsize=int(os.environ.get("FAUST_TEST_BUFFER", "8")),
    broker_max_poll_records=int(os.environ.get("FAUST_TEST_MAX_POLL", "8")),
    broker_commit_interval=0.5,
)
stage = govern(
    app,
    topology,
    stage_name,
    options=FaustOptions(
        metrics_port=int(os.environ["FAUST_TEST_METRICS_PORT"]),
        pressure_refresh_s=0.2,
        report_interval_s=0.5,
    ),
)


@stage.agent()
async def handle(events: AsyncIterator[TaskEvent]) -> None:
    async for event in events:
        with seen_file.open("a", encoding="utf-8") as seen:
            seen.write(event.run_id + "\n")
        if work_s:
            await asyncio.sleep(work_s)
        if fail_on and event.payload == fail_on:
            raise RuntimeError("the agent failed on this one")
        if emits:
            await stage.emit(event)


if __name__ == "__main__":
    app.main()
