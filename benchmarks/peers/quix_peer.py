"""Quix Streams child: consume -> restage -> produce -> commit, as Quix recommends.

Configuration, from Quix's own documentation (quix-streams docs/quickstart.md, "Step 3.
Consuming data from Kafka"; docs/configuration.md; defaults in quixstreams/app.py
Application.__init__):

- `Application(broker_address, consumer_group, auto_offset_reset="earliest")` and
  `app.run()`, everything else at its default: processing_guarantee "at-least-once"
  (the producer is flushed before offsets are committed), commit_interval 5 s;
- a StreamingDataFrame: `app.dataframe(input).apply(fn).to_topic(output)`, raw bytes in
  and out (value_deserializer / value_serializer "bytes", docs/advanced/serialization.md)
  with the Avro envelope handled in `fn`, as with any format Quix has no codec for;
- I/O-bound: Quix processes one record at a time per process (a StreamingDataFrame
  function is called synchronously per message; there is no concurrency setting), so the
  200 ms call blocks the stream; scaling out means more processes in the group.

Run by the driver as `<quix venv>/bin/python -m benchmarks.peers.quix_peer ...`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import quixstreams
from quixstreams import Application

from benchmarks.peers import child
from benchmarks.peers.envelope import Envelope


def main(argv: list[str]) -> None:
    args = child.parse_args(argv)
    envelope = Envelope()
    first = child.FirstSeen()

    def restage(value: bytes) -> bytes:
        first.stamp()
        return envelope.restage(value, child.OUTPUT_STAGE, child.now_ms())

    def slow_call(value: bytes) -> bytes:
        first.stamp()
        time.sleep(args.latency)  # the model or tool call; blocks this (only) record
        return envelope.restage(value, child.OUTPUT_STAGE, child.now_ms())

    app = Application(
        broker_address=args.servers,
        consumer_group=args.group,
        auto_offset_reset="earliest",  # the input is produced before the app starts
        loglevel="WARNING",
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    sdf: Any = app.dataframe(source)
    sdf = sdf.apply(slow_call if args.workload == "io" else restage)
    sdf.to_topic(sink)
    child.stop_on_stdin_eof(child.sigterm_self)
    cpu0 = child.cpu_seconds()
    app.run()
    child.report(first, cpu0, quixstreams.__version__)


if __name__ == "__main__":
    main(sys.argv[1:])
