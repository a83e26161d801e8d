"""faust-streaming child: consume -> restage -> produce -> commit, as faust recommends.

Configuration, from faust's own documentation (faust-streaming/faust docs/playbooks/
quickstart.rst "Hello World"; docs/userguide/agents.rst "Concurrency";
docs/userguide/settings.rst):

- `faust.App(id, broker="kafka://...", value_serializer="raw")` (the quickstart's
  choice for bytes it does not model), one agent over `app.topic(input)` that sends each
  restaged value to `app.topic(output)`, started with the `worker` command
  (`app.main()`), settings at their defaults otherwise: consumer_auto_offset_reset
  "earliest", broker_commit_interval 2.8 s; faust commits only acked offsets and flushes
  its producer first (faust/transport/consumer.py Consumer.commit), so at-least-once;
- the web server is off (`web_enabled=False`, `faust worker --without-web`): nothing
  here serves HTTP, and port 6066 may be taken on a shared machine; tables' datadir is
  a temporary directory (there are no tables);
- I/O-bound: the agent's `concurrency` (agents.rst: "start multiple instances of an
  agent ... Each ... will process items in the stream concurrently"), as many instances
  as streams has calls in flight.

Run by the driver as `<faust venv>/bin/python -m benchmarks.peers.faust_peer ...`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from typing import Any

import faust

from benchmarks.peers import child
from benchmarks.peers.envelope import Envelope


def main(argv: list[str]) -> None:
    args = child.parse_args(argv)
    envelope = Envelope()
    first = child.FirstSeen()
    app = faust.App(
        args.group,  # the app id is faust's consumer group
        broker=";".join(f"kafka://{s}" for s in args.servers.split(",")),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
    )
    source = app.topic(args.input)
    sink = app.topic(args.output)
    latency = args.latency if args.workload == "io" else None

    async def process(stream: Any) -> None:
        async for key, value in stream.items():  # items(): the key travels with the value
            first.stamp()
            if latency is not None:
                await asyncio.sleep(latency)  # the model or tool call
            value = envelope.restage(value, child.OUTPUT_STAGE, child.now_ms())
            await sink.send(key=key, value=value)

    concurrency = args.concurrency if args.workload == "io" else 1  # 1: faust's default
    app.agent(source, concurrency=concurrency)(process)
    child.stop_on_stdin_eof(child.sigterm_self)
    cpu0 = child.cpu_seconds()
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    try:
        app.main()
    except SystemExit as exit_:  # the worker command always ends in SystemExit
        if exit_.code not in (None, 0):
            raise
    child.report(first, cpu0, faust.__version__)


if __name__ == "__main__":
    main(sys.argv[1:])
