"""Child for the systems that run in this project's own environment: streams (async and
plain handlers) and the bare confluent-kafka loop.

Passthrough is benchmarks.passthrough's own child, unchanged (its handlers, its bare
loop, common.serve_worker). I/O-bound uses common.serve_worker with a handler that waits
like benchmarks.io_bound's, plus the first-call stamp the driver's clock starts from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from benchmarks import common, passthrough
from streams.events import TaskEvent
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Handler

SYSTEMS = ("streams-async", "streams-sync", "bare")


def _slow_handler(system: str, latency_s: float, first: list[float]) -> Handler:
    async def slow_async(event: TaskEvent, ctx: HandlerContext) -> None:
        if not first:
            first.append(time.time())
        await asyncio.sleep(latency_s)  # the model or tool call
        ctx.emit(event)

    def slow_sync(event: TaskEvent, ctx: HandlerContext) -> None:
        if not first:
            first.append(time.time())
        time.sleep(latency_s)  # the same call, blocking one of handler_threads
        ctx.emit(event)

    return slow_async if system == "streams-async" else slow_sync


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="a streams child of python -m benchmarks.peers")
    p.add_argument("--system", choices=SYSTEMS, required=True)
    p.add_argument("--workload", choices=["passthrough", "io"], required=True)
    p.add_argument("--workflow", required=True, help="the workflow as JSON")
    p.add_argument("--servers", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--opts", default="{}", help="WorkerOptions as JSON")
    args = p.parse_args(argv)
    workflow: dict[str, Any] = json.loads(args.workflow)
    opts: dict[str, Any] = json.loads(args.opts)
    if args.workload == "passthrough":
        passthrough._child(args.system, workflow, args.servers, opts)
        return
    if args.system == "bare":
        raise SystemExit("the bare loop has no I/O-bound variant")
    first: list[float] = []
    handler = _slow_handler(args.system, args.latency, first)
    result = common.serve_worker(workflow, args.stage, args.servers, handler, **opts)
    print(json.dumps({**result, "first_at": first[0] if first else None}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
