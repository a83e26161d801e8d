"""Intake admission throughput and decision latency, through the Python API and over HTTP,
against the floors under them: a bare confluent-kafka producer (acks=all, each delivery
report awaited) and a trivial Starlette endpoint answering 202 through the same uvicorn.

Run: python -m benchmarks.intake_admission [--quick] [--variants a,b]. Each variant gets a
fresh workflow. "accept": bounds never reached (reserve in the ledger, read back, publish,
append admitted); "reject": max_queued_per_tenant 10 (the local fast rejection). HTTP
servers run in a child process (`--serve KIND`); the load comes from wrk (C, one thread) for
`--http-seconds` when it is installed (`apt-get install wrk`), else from httpx in this
process (`--load httpx` forces that), which saturates a core of its own on small machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import uvicorn
from confluent_kafka import KafkaError, Message, Producer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks import common, wrk_load
from streams.errors import StreamsError
from streams.intake.http import create_app
from streams.intake.requests import RunRequest
from streams.intake.service import Intake
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig, producer_settings
from streams.topology import Topology, parse_topology

NAME = "intake_admission"
VARIANTS = (
    "bare-producer-seq bare-producer api-accept api-reject http-trivial http-accept http-reject"
    " replicas-accept replicas-bound"
)
GENEROUS = {"max_queued_runs": 10_000_000, "max_queued_per_tenant": 10_000_000}
TIGHT = {"max_queued_runs": 10_000_000, "max_queued_per_tenant": 10}
#: replicas-bound: a tenant's bound that the two replicas' submissions overrun together.
REPLICA_BOUND = 1_000
TARGETS = {"api_per_s": 20_000.0, "http_per_s": 2_000.0, "http_p99_ms": 50.0}
PAYLOAD = json.dumps({"prompt": os.urandom(500).hex()}).encode()  # ~1 KB, as the bare records
HEADERS = ["variant", "n", "per_s", "p50_ms", "p99_ms", "x floor/s", "x floor p99", "outcomes"]
Call = Callable[[int], Awaitable[str]]
Args = argparse.Namespace
Result = dict[str, Any]


async def drive(call: Call, count: int, conc: int, args: argparse.Namespace) -> dict[str, Any]:
    """`count` calls (after args.warmup unmeasured), `conc` at once: rate, latency, outcomes."""
    if args.warmup:
        await drive(call, args.warmup, min(conc, args.warmup), Args(**{**vars(args), "warmup": 0}))
    latencies: list[float] = []
    done_at: list[float] = []
    outcomes: Counter[str] = Counter()
    issued, deadline = 0, time.monotonic() + args.timeout

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.monotonic() < deadline:
            i, issued = issued, issued + 1
            t0 = time.perf_counter()
            try:
                outcomes[await call(i)] += 1
            except (StreamsError, httpx.HTTPError) as exc:
                outcomes[type(exc).__name__] += 1
            done_at.append(time.perf_counter())
            latencies.append(done_at[-1] - t0)

    cpu0, t0 = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    tenth = max(1, len(done_at) // 10)  # rates at the start and the end show any decline
    return {
        "requests": len(latencies), "timed_out": len(latencies) < count, "seconds": seconds,
        "per_s": len(latencies) / seconds,
        "p50_ms": common.percentile(latencies, 50) * 1000,
        "p99_ms": common.percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "per_s_first_tenth": tenth / (done_at[tenth - 1] - t0),
        "per_s_last_tenth": tenth / (done_at[-1] - done_at[-tenth - 1] or 1e-9),
        "outcomes": dict(outcomes), "load_process_cpu_s": cpu, "concurrency": conc,
    }  # fmt: skip


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


def _cpu_s() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


def make_workflow(client: ClientConfig, intake: dict[str, Any]) -> tuple[dict[str, Any], Topology]:
    data: dict[str, Any] = {
        "workflow": f"bench{uuid.uuid4().hex[:8]}", "lanes": ["urgent", "standard", "background"],
        "topic_defaults": {"partitions": 3, "retention_ms": 3_600_000},
        "stages": {"plan": {"handler": "benchmarks.common:unused"}}, "intake": intake,
    }  # fmt: skip
    topology = parse_topology(data, "<benchmark intake>", validate_handlers=False)
    admin, specs = Admin(client), topology.all_topics()
    admin.apply(TopicWanted(t, s.partitions, None, s.compacted) for t, s in specs.items())
    _wait_for_leaders(admin, list(topology.all_topics()))
    return data, topology


def _wait_for_leaders(admin: Admin, topics: list[str]) -> object:
    for _ in range(300):  # new topics answer NOT_LEADER for a moment
        with contextlib.suppress(StreamsError):
            return admin.end_offsets(common.partitions_of(topics, 1))
        time.sleep(0.1)
    return admin.end_offsets(common.partitions_of(topics, 1))  # raises what is wrong


def bare_producer(client: ClientConfig, args: Args, count: int, conc: int) -> Result:
    """The broker round-trip floor: intake's producer settings, one 1 KB record per call,
    its delivery report awaited; a thread serves reports as intake's I/O thread does."""
    topic, admin = f"bench{uuid.uuid4().hex[:8]}.bare", Admin(client)
    admin.apply([TopicWanted(topic, 1)])  # one partition, as the run ledger
    _wait_for_leaders(admin, [topic])
    producer = Producer(producer_settings(client.with_extra({"linger.ms": 1})))
    record, stop = os.urandom(len(PAYLOAD)), threading.Event()

    def serve() -> None:
        while not stop.is_set():
            producer.poll(0.005)

    async def call(i: int) -> str:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, done, "acked" if error is None else "error")

        producer.produce(topic, record, key=str(i).encode(), on_delivery=on_delivery)
        return await done

    (thread := threading.Thread(target=serve, daemon=True)).start()
    try:
        return asyncio.run(drive(call, count, conc, args))
    finally:
        stop.set()
        thread.join()
        producer.flush(10)


def api(client: ClientConfig, args: Args, bounds: dict[str, Any]) -> Result:
    _, topology = make_workflow(client, bounds)
    intake = Intake(topology, client).start()

    async def call(i: int) -> str:
        return (await intake.asubmit(RunRequest(f"tenant-{i % args.tenants}", PAYLOAD))).outcome

    try:
        result = asyncio.run(drive(call, args.api_count, args.api_concurrency, args))
    finally:
        intake.close()
    return {**result, "rss_mb_after": common.proc_status_kb("VmRSS") / 1024}


def replicas(client: ClientConfig, args: Args, bounded: bool) -> Result:
    """Two intake replicas, each a process of its own, on one workflow's ledger: each
    submits half of --api-count at half of --api-concurrency, started together. The rate
    is every decision over the span from the first start to the last end. Bounded:
    max_queued_per_tenant REPLICA_BOUND, and together the replicas offer each tenant
    more than that: exact bounds admit exactly REPLICA_BOUND per tenant (nothing drains)."""
    bounds = {**GENEROUS, "max_queued_per_tenant": REPLICA_BOUND} if bounded else GENEROUS
    workflow, _ = make_workflow(client, bounds)
    per_replica = args.api_count // 2
    argv = [
        "--serve", "replica", "--workflow", json.dumps(workflow),
        "--servers", client.bootstrap_servers, "--api-count", str(per_replica),
        "--api-concurrency", str(max(1, args.api_concurrency // 2)),
        "--tenants", str(args.tenants), "--warmup", "0" if bounded else str(args.warmup),
    ]  # fmt: skip
    children = [common.spawn(f"benchmarks.{NAME}", argv) for _ in range(2)]
    try:
        for child in children:  # each has started its intake (and warmed up)
            line = child.stdout.readline() if child.stdout else ""
            if not line.startswith("{"):
                raise common.child_failed(child, "intake replica (not ready)")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        each = [common.finish(child, timeout_s=args.timeout) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    span = max(r["ended_at"] for r in each) - min(r["started_at"] for r in each)
    outcomes: Counter[str] = Counter()
    by_tenant: Counter[str] = Counter()
    for r in each:
        outcomes.update(r["outcomes"])
        by_tenant.update(r["accepted_by_tenant"])
    total = sum(r["requests"] for r in each)
    result: Result = {
        "requests": total, "seconds": span, "per_s": total / span,
        "p50_ms": max(r["p50_ms"] for r in each), "p99_ms": max(r["p99_ms"] for r in each),
        "outcomes": dict(outcomes), "accepted_by_tenant": dict(by_tenant), "replicas": each,
    }  # fmt: skip
    if bounded:
        offered = Counter(f"tenant-{i % args.tenants}" for i in range(per_replica) for _ in "ab")
        result["bound_exact"] = all(
            by_tenant[t] == min(REPLICA_BOUND, n) for t, n in offered.items()
        )
    return result


def serve_replica(args: Args) -> None:
    """In a child: one intake replica; warm up, say ready, wait for "go", submit, report."""
    workflow = json.loads(args.workflow)
    topology = parse_topology(workflow, "<benchmark child>", validate_handlers=False)
    intake = Intake(topology, ClientConfig(args.servers)).start()
    accepted: Counter[str] = Counter()

    async def call(i: int) -> str:
        tenant = f"tenant-{i % args.tenants}"
        outcome = (await intake.asubmit(RunRequest(tenant, PAYLOAD))).outcome
        if outcome == "accepted":
            accepted[tenant] += 1
        return outcome

    async def warm(i: int) -> str:
        return (await intake.asubmit(RunRequest("warm-up", PAYLOAD))).outcome

    try:
        quiet = Args(**{**vars(args), "warmup": 0})
        if args.warmup:
            asyncio.run(drive(warm, args.warmup, min(args.api_concurrency, args.warmup), quiet))
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
        started = time.time()
        result = asyncio.run(drive(call, args.api_count, args.api_concurrency, quiet))
        ended = time.time()
    finally:
        intake.close()
    print(json.dumps({**result, "started_at": started, "ended_at": ended,
                      "accepted_by_tenant": dict(accepted)}), flush=True)  # fmt: skip


def http(client: ClientConfig, args: Args, kind: str) -> Result:
    workflow: dict[str, Any] = {}
    if kind != "trivial":
        workflow, _ = make_workflow(client, GENEROUS if kind == "accept" else TIGHT)
    argv = ["--serve", kind, "--workflow", json.dumps(workflow)]
    child = common.spawn(f"benchmarks.{NAME}", [*argv, "--servers", client.bootstrap_servers])
    line = child.stdout.readline() if child.stdout else ""
    if not line.startswith("{"):
        raise common.child_failed(child, f"http-{kind} server (no port)")
    port, name = json.loads(line)["port"], workflow.get("workflow", "any")
    url = f"http://127.0.0.1:{port}/v1/workflows/{name}/runs"
    runs = ({"tenant": f"tenant-{t}", "payload": json.loads(PAYLOAD)} for t in range(args.tenants))
    bodies = [json.dumps(run).encode() for run in runs]
    headers = {"content-type": "application/json"}

    async def run() -> dict[str, Any]:
        # One client per connection: one shared AsyncClient with 64 connections costs the
        # load process ~7 ms of CPU a request here (its pool scans every connection).
        idle = [httpx.AsyncClient(timeout=30.0) for _ in range(args.http_concurrency)]

        async def call(i: int) -> str:
            session = idle.pop()
            try:
                response = await session.post(url, content=bodies[i % len(bodies)], headers=headers)
            finally:
                idle.append(session)
            return str(response.status_code)

        result = await drive(call, args.http_count, args.http_concurrency, args)
        await asyncio.gather(*(session.aclose() for session in idle))
        return result

    def with_wrk() -> dict[str, Any]:
        wrk_load.run(url, bodies, connections=args.http_concurrency, seconds=1)  # warm-up
        return wrk_load.run(
            url, bodies, connections=args.http_concurrency, seconds=args.http_seconds
        )

    try:
        result = with_wrk() if args.load == "wrk" else asyncio.run(run())
    finally:
        server = common.finish(child)
    return {**result, "server": server}


def serve(kind: str, workflow: dict[str, Any], servers: str) -> None:
    """In a child: serve `kind` on a free loopback port until stdin closes."""
    intake: Intake | None = None
    if kind == "trivial":

        async def accept(request: Request) -> Response:
            await request.body()
            return Response(b'{"outcome":"accepted"}', 202, media_type="application/json")

        app = Starlette(routes=[Route("/v1/workflows/{workflow}/runs", accept, methods=["POST"])])
    else:
        topology = parse_topology(workflow, "<benchmark child>", validate_handlers=False)
        intake = Intake(topology, ClientConfig(servers)).start()
        app = create_app(intake, freeze_heap=True)  # a process of its own
    # proto IPPROTO_TCP, or asyncio leaves TCP_NODELAY off on accepted connections and every
    # response waits ~40 ms for a delayed ACK (Nagle), as in tests' http_server helper.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections wait in the backlog until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    common.stop_on_stdin_eof(lambda: setattr(server, "should_exit", True))
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    server.run(sockets=[sock])
    if intake is not None:
        intake.close()
    peak_mb = common.proc_status_kb("VmHWM") / 1024
    print(json.dumps({"peak_rss_mb": peak_mb, "cpu_s_lifetime": _cpu_s()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="2,000 API requests; HTTP 500 requests or 3 s"
    )
    parser.add_argument("--variants", default=VARIANTS.replace(" ", ","))
    for flag, default in (
        ("api-count", 20_000), ("http-count", 5_000), ("seq-count", 1_000),
        ("api-concurrency", 500), ("http-concurrency", 64), ("tenants", 8),
        ("http-seconds", 10.0),  # with wrk
        ("warmup", 100), ("timeout", 300.0),  # timeout: per variant, s
    ):  # fmt: skip
        parser.add_argument(f"--{flag}", type=type(default), default=default)
    parser.add_argument("--load", choices=("wrk", "httpx"), default=None, help="HTTP load")
    for hidden in ("--serve", "--workflow", "--servers"):  # the server child's
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "replica":
        return serve_replica(args)
    if args.serve:
        return serve(args.serve, json.loads(args.workflow), args.servers)
    if args.quick:
        args.api_count, args.http_count, args.seq_count = 2_000, 500, 200
        args.http_seconds = min(args.http_seconds, 3.0)
    if args.load is None:
        args.load = "wrk" if wrk_load.available() else "httpx"
    client = ClientConfig(common.bootstrap())
    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "bare-producer-seq": lambda: bare_producer(client, args, args.seq_count, 1),
        "bare-producer": lambda: bare_producer(client, args, args.api_count, args.api_concurrency),
        "api-accept": partial(api, client, args, GENEROUS),
        "api-reject": partial(api, client, args, TIGHT),
        **{f"http-{k}": partial(http, client, args, k) for k in ("trivial", "accept", "reject")},
        "replicas-accept": partial(replicas, client, args, False),
        "replicas-bound": partial(replicas, client, args, True),
    }  # fmt: skip
    for variant in args.variants.split(","):
        if variant not in runs:
            parser.error(f"unknown variant {variant!r} (known: {VARIANTS})")
        results[variant] = runs[variant]()
    for variant, r in results.items():
        floor = results.get("bare-producer" if variant.startswith("api") else "http-trivial")
        if floor is not None and variant.startswith(("api-", "http-accept", "http-reject")):
            r["ratio_per_s_to_floor"] = r["per_s"] / floor["per_s"]
            r["ratio_p99_to_floor"] = r["p99_ms"] / floor["p99_ms"]
    api_r, http_r = results.get("api-accept", {}), results.get("http-accept", {})
    checks = {
        "api_per_s": api_r.get("per_s", 0) >= TARGETS["api_per_s"],
        "http_per_s": http_r.get("per_s", 0) >= TARGETS["http_per_s"],
        "http_p99_ms": http_r.get("p99_ms", 1e9) < TARGETS["http_p99_ms"],
    }
    if "replicas-bound" in results:
        checks["replicas_bound_exact"] = bool(results["replicas-bound"]["bound_exact"])
    path = common.write_results(
        NAME,
        {**{k: v for k, v in vars(args).items() if k not in ("serve", "workflow", "servers")},
         "payload_bytes": len(PAYLOAD), "generous_bounds": GENEROUS, "tight_bounds": TIGHT,
         "targets": TARGETS},
        {"variants": results, "targets_met": checks},
    )  # fmt: skip
    rows = [
        [v, r["requests"], r["per_s"], r["p50_ms"], r["p99_ms"],
         f"{r.get('ratio_per_s_to_floor', 1.0):.3f}", f"{r.get('ratio_p99_to_floor', 1.0):.2f}",
         " ".join(f"{k}={n}" for k, n in sorted(r["outcomes"].items()))]
        for v, r in results.items()
    ]  # fmt: skip
    common.print_table(HEADERS, rows)
    print(f"targets met: {checks}\nwrote {path}")


if __name__ == "__main__":
    main()
