"""The `streams` command: argv, logging and exit codes; everything else is library code.

Errors streams raises on purpose print as one line (with --debug, the traceback too).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer

from streams.config import load_settings
from streams.errors import ConfigError, StreamsError

if TYPE_CHECKING:
    from streams.inspect.dead_letters import DeadLetterEntry
    from streams.operate.escalation_entries import EscalationEntry
    from streams.operate.replay_plan import ReplayItem
    from streams.types import Record

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
broker_app = typer.Typer(no_args_is_help=True, help="The local Apache Kafka broker.")
app.add_typer(broker_app, name="broker")
topology_app = typer.Typer(no_args_is_help=True, help="Workflow topology files.")
app.add_typer(topology_app, name="topology")
dlq_app = typer.Typer(no_args_is_help=True, help="The workflow's dead letters.")
app.add_typer(dlq_app, name="dlq")
escalations_app = typer.Typer(no_args_is_help=True, help="Runs handed to people (W.escalations).")
app.add_typer(escalations_app, name="escalations")
runs_app = typer.Typer(no_args_is_help=True, help="The workflow's runs.")
app.add_typer(runs_app, name="runs")
# README "Operator controls": streams control TOPOLOGY degrade|pause|resume|tool|clear|show
from streams.control.cli import control_app  # noqa: E402

app.add_typer(control_app, name="control")

_debug = False
T = TypeVar("T")


class _Entry(Protocol):
    """A dead letter or escalation read for `list`/`show`: its place in its topic."""

    @property
    def id(self) -> str: ...


_E = TypeVar("_E", bound=_Entry)

#: Every command that talks to Kafka takes the cluster's client settings (README "Secured
#: clusters"): this file, then STREAMS_KAFKA_* variables over it.
_ClientConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--client-config",
        help="librdkafka settings file (client.properties: SASL, TLS; default "
        "STREAMS_CLIENT_CONFIG); STREAMS_KAFKA_* variables override it.",
    ),
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    schema_registry: Annotated[
        str | None,
        typer.Option(
            "--schema-registry",
            metavar="URL",
            help="Confluent-compatible schema registry (sets STREAMS_SCHEMA_REGISTRY_URL); "
            "default: none, records stay Avro single-object encoded.",
        ),
    ] = None,
) -> None:
    global _debug
    _debug = debug
    if schema_registry:  # README "Schema registry": every codec of this command reads it
        from streams.registry.settings import SCHEMA_REGISTRY_URL_ENV

        os.environ[SCHEMA_REGISTRY_URL_ENV] = schema_registry
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _raise(error: StreamsError) -> None:
    raise error


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except StreamsError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


@broker_app.command("start")
def broker_start(
    port: Annotated[
        int | None, typer.Option(help="Listener port (default: the last one, else a free one).")
    ] = None,
    refresh: Annotated[
        bool, typer.Option(help="Fetch the Kafka jars again (restarts a running broker).")
    ] = False,
    fresh: Annotated[
        bool, typer.Option(help="Wipe the data: a new, empty cluster (all topics lost).")
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(help="Add a SASL_SSL listener (keytool certificates, one user); kept."),
    ] = False,
) -> None:
    """Start the local broker (or reuse the running one) and print its bootstrap address.

    Topics, committed offsets and the port are kept from the last start unless --fresh."""
    from streams.kafka.local_broker import LocalBroker

    settings = load_settings()
    if settings.bootstrap_servers:
        typer.echo(f"KAFKA_BOOTSTRAP_SERVERS is set; using {settings.bootstrap_servers}")
        return
    state, reused = _run(
        lambda: LocalBroker(settings).start(port=port, refresh=refresh, fresh=fresh, secure=secure)
    )
    verb = "running" if reused else "started"
    typer.echo(f"Kafka {state.kafka_version} {verb} (pid {state.pid}) at {state.bootstrap}")
    typer.echo(f"data {state.data_dir} (cluster {state.cluster_id})")
    if state.secure_bootstrap:
        typer.echo(f"SASL_SSL at {state.secure_bootstrap}: --client-config {state.client_config}")
    typer.echo(state.bootstrap)


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker; its data stays for the next start."""
    from streams.kafka.local_broker import LocalBroker

    stopped = _run(lambda: LocalBroker(load_settings()).stop())
    typer.echo("stopped" if stopped else "no local broker was running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs, and where. Exit 1 when it does not."""
    from streams.kafka.local_broker import LocalBroker

    settings = load_settings()
    if settings.bootstrap_servers:
        typer.echo(f"using the cluster at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        return
    state = _run(lambda: LocalBroker(settings).status())
    if state is None:
        typer.echo("not running")
        raise typer.Exit(code=1)
    typer.echo(f"running: Kafka {state.kafka_version}, pid {state.pid}, {state.bootstrap}")
    typer.echo(f"data: {state.data_dir}")
    typer.echo(f"cluster id: {state.cluster_id}")
    if state.secure_bootstrap:
        typer.echo(f"SASL_SSL: {state.secure_bootstrap} (--client-config {state.client_config})")


@app.command("worker")
def worker(
    topology_file: Annotated[Path, typer.Argument(help="The workflow's topology YAML.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage to run.")],
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0: any).")] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the metrics port binds (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    worker_id: Annotated[
        str | None, typer.Option(help="Stable id (exactly-once stages fence by it).")
    ] = None,
    group_protocol: Annotated[
        str, typer.Option(help="classic, or consumer for KIP-848 groups.")
    ] = "classic",
    client_config: _ClientConfigOpt = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Group members to run, one process each (worker ids X-0, X-1, ...), "
            'behind one --metrics-port (README "Stage workers").',
        ),
    ] = 1,
    group_port_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run one stage worker until SIGTERM/SIGINT; drains in-flight work, commits, exits 0."""
    import signal

    from streams.kafka.client_config import ClientConfig
    from streams.kafka.cluster import connect
    from streams.runtime.options import WorkerOptions
    from streams.runtime.worker import StageWorker
    from streams.topology import Topology, load_topology

    def prepare(worker_id: str | None) -> tuple[Topology, WorkerOptions, ClientConfig]:
        sys.path.insert(0, str(Path.cwd()))  # handlers are imported like uvicorn apps
        topology = load_topology(topology_file)
        if stage not in topology.stages:
            known = ", ".join(topology.stages)
            raise ConfigError(str(topology_file), "stages", f"no stage {stage!r} (has {known})")
        if group_protocol not in ("classic", "consumer"):
            raise ConfigError("--group-protocol", "", "must be classic or consumer")
        options = WorkerOptions(
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            group_protocol=group_protocol,  # type: ignore[arg-type]
        )
        if worker_id:
            options = dataclasses.replace(options, worker_id=worker_id)
        client = connect(load_settings(), client_id=f"streams-{stage}", file=client_config)
        return topology, options, client

    def build() -> tuple[StageWorker, ClientConfig]:
        topology, options, client = prepare(worker_id)
        if topology.stages[stage].review is not None:  # kind: review (README "Human review")
            from streams.review import review_worker

            return review_worker(topology, stage, client, options=options), client
        return StageWorker(topology, stage, client, options=options), client

    if processes > 1:  # README "Stage workers": a supervisor of `processes` workers
        from streams.runtime.process_group import GroupSpec, ProcessGroup, child_worker_id

        def check() -> None:  # what a child would refuse is refused here, once, before any starts
            topology, options, client = prepare(child_worker_id(worker_id, 0))
            if topology.stages[stage].review is None:  # a worker's own checks (exactly-once id)
                StageWorker(topology, stage, client, options=options)

        _run(check)
        args = [*(["--debug"] if _debug else []), "worker", str(topology_file), "--stage", stage]
        args += ["--group-protocol", group_protocol]
        args += ["--client-config", str(client_config)] if client_config else []
        group = ProcessGroup(
            GroupSpec(processes, tuple(args), worker_id, metrics_port, metrics_host)
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: group.stop())
        return _run(group.run)

    built, client = _run(build)
    from streams.runtime.heap import freeze_startup_heap

    freeze_startup_heap()  # this process is the worker's alone (streams.runtime.heap)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: built.stop())
    if group_port_file is not None:  # a child of `--processes N` (streams.runtime.process_child)
        from streams.runtime.process_child import supervised

        supervised(built, group_port_file)
    from streams.runtime.refusal_watchdog import RefusalWatchdog

    # The loop stops itself on refused credentials, unless a client call it is in never
    # returns (streams/runtime/refusal_watchdog.py): then the watchdog stops the process.
    watchdog = RefusalWatchdog(client.cluster_key, f"stage {stage} worker")
    watchdog.start()
    try:
        _run(built.run)
    finally:
        watchdog.stop()


@app.command("intake")
def intake(
    topology_file: Annotated[Path, typer.Argument(help="The workflow's topology YAML.")],
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    replica_id: Annotated[str | None, typer.Option(help="Name of this replica.")] = None,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Serve the workflow's intake over HTTP (admission control)."""
    import uvicorn

    from streams.intake.http import create_app
    from streams.intake.service import Intake
    from streams.kafka.cluster import connect
    from streams.runtime.refusal_watchdog import RefusalWatchdog
    from streams.topology import load_topology

    server: uvicorn.Server | None = None

    def refused(_: object) -> None:  # from the intake's I/O thread: end the server cleanly
        if server is not None:
            server.should_exit = True

    def build() -> tuple[Intake, str]:
        topology = load_topology(topology_file, validate_handlers=False)
        client = connect(load_settings(), client_id="streams-intake", file=client_config)
        started = Intake(topology, client, replica_id=replica_id, on_refused=refused).start()
        return started, client.cluster_key

    service, cluster = _run(build)
    app_ = create_app(service, freeze_heap=True)
    server = uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="warning"))
    # As for a worker: the intake stops itself on refused credentials (one line, exit 1);
    # the watchdog stops the process if a client call keeps it from getting there.
    watchdog = RefusalWatchdog(cluster, "intake")
    watchdog.start()
    try:
        server.run()
    finally:
        service.close()  # its commits can hang on a refusing cluster: watchdog still on
        watchdog.stop()
    failure = service.refused
    if failure is not None:
        _run(lambda: _raise(failure))


@app.command("review")
def review(
    topology_file: Annotated[Path, typer.Argument(help="The workflow's topology YAML.")],
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8095,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    client_config: _ClientConfigOpt = None,
) -> None:
    """Serve the workflow's review queue over HTTP: GET /v1/workflows/W/reviews lists
    pending reviews, POST .../reviews/{run_id} decides one (README "Human review")."""
    from streams.kafka.cluster import connect
    from streams.review import ReviewServer
    from streams.topology import load_topology

    def build() -> tuple[ReviewServer, str]:
        topology = load_topology(topology_file, validate_handlers=False)
        if not any(s.review is not None for s in topology.stages.values()):
            raise ConfigError(str(topology_file), "stages", "no stage has kind: review")
        client = connect(load_settings(), client_id="streams-review", file=client_config)
        return ReviewServer(topology, client, host=host, port=port), client.cluster_key

    import signal

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM ends it like Ctrl-C: the server closes cleanly

    from streams.runtime.refusal_watchdog import RefusalWatchdog

    server, cluster = _run(build)
    signal.signal(signal.SIGTERM, interrupt)
    typer.echo(
        f"reviews of {server.topology.workflow} at {server.url}/v1/workflows/"
        f"{server.topology.workflow}/reviews"
    )
    # Its readers ride out outages, so a cluster refusing the credentials for good would
    # leave it answering errors forever: the watchdog stops it with one line and exit 1.
    watchdog = RefusalWatchdog(cluster, "review server")
    watchdog.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        watchdog.stop()


@app.command("monitor")
def monitor(
    topology_file: Annotated[Path, typer.Argument(help="The workflow's topology YAML.")],
    once: Annotated[bool, typer.Option(help="Print one snapshot and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once: JSON, for scripts.")
    ] = False,
    serve: Annotated[
        int | None, typer.Option(help="Serve /metrics, /api/status and / on this port (0: any).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address --serve binds.")] = "127.0.0.1",
    interval: Annotated[float, typer.Option(help="Seconds between readings.")] = 2.0,
    sample_for: Annotated[float, typer.Option(help="With --once: seconds to sample.")] = 3.0,
    window: Annotated[float, typer.Option(help="Status window in seconds (Burrow's).")] = 300.0,
    storm: Annotated[float, typer.Option(help="Dead letters per minute that make ERR.")] = 60.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between lines off a terminal.")] = 10.0,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Lag, time lag, oldest queued age, status, pauses, workers, dead letters and intake
    decisions of a workflow, read from Kafka (no worker needs to run)."""
    import json
    import signal
    import threading

    from rich.console import Console

    from streams.kafka.cluster import connect
    from streams.monitor.collector import WorkflowReader
    from streams.monitor.exporter import MonitorServer
    from streams.monitor.run import run_rounds, sample_once
    from streams.monitor.view import render_table
    from streams.topology import load_topology

    if as_json and not once:
        raise typer.BadParameter("--json goes with --once (--serve has /api/status)")

    def build() -> WorkflowReader:
        topology = load_topology(topology_file, validate_handlers=False)
        client = connect(load_settings(), client_id="streams-monitor", file=client_config)
        return WorkflowReader(topology, client, window_s=window, storm_per_min=storm)

    reader = _run(build)
    console = Console()
    try:
        if once:
            snapshot = _run(lambda: sample_once(reader, sample_s=sample_for, interval_s=interval))
            if as_json:
                typer.echo(json.dumps(snapshot.to_dict(), indent=1))
            else:
                console.print(render_table(snapshot))
            if snapshot.error and all(s.status == "UNKNOWN" for s in snapshot.stages):
                typer.echo(f"error: nothing could be read: {snapshot.error}", err=True)
                raise typer.Exit(code=1)
            return
        server = _run(lambda: MonitorServer(serve, host)) if serve is not None else None
        if server is not None:
            typer.echo(f"serving {server.url}/ (status page), /api/status, /metrics")
            sys.stdout.flush()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            _run(
                lambda: run_rounds(
                    reader, interval_s=interval, stop=stop, console=console, server=server,
                    heartbeat_s=heartbeat,
                )
            )  # fmt: skip
        finally:
            if server is not None:
                server.close()
    finally:
        reader.close()


_TopologyArg = Annotated[Path, typer.Argument(help="The workflow's topology YAML.")]
_StageOpt = Annotated[str | None, typer.Option(help="Only this stage's.")]
_ReasonOpt = Annotated[str | None, typer.Option(help="Only this reason (expired, timeout, ...).")]
_SinceOpt = Annotated[str | None, typer.Option(help="Dead since: 10m, 2h, 1d or ISO 8601.")]
_RunOpt = Annotated[str | None, typer.Option("--run-id", help="Only this run's.")]
_RateOpt = Annotated[float, typer.Option(help="At most this many submissions a second.")]
_IntakeUrlOpt = Annotated[
    str | None, typer.Option(help="Send to this running intake over HTTP (default: a replica).")
]
_DeadlineInOpt = Annotated[
    str | None, typer.Option(help="A new deadline from now (10m, 2h); default: the run's own.")
]
_DryRunOpt = Annotated[bool, typer.Option(help="Only say what would be sent.")]
_ResultsJsonOpt = Annotated[bool, typer.Option("--json", help="Results as JSON, for scripts.")]


def _since_ms(since: str | None) -> int | None:
    """--since (`streams dlq`, `streams escalations`) as epoch ms; a ConfigError naming it."""
    import time

    from streams.inspect.dead_letters import parse_since

    try:
        return None if since is None else parse_since(since, time.time())
    except ValueError as exc:
        raise ConfigError("--since", "", str(exc)) from None


def _echo_list(
    matching: list[_E], total: int, limit: int,
    as_dict: Callable[[_E], dict[str, object]] | None, as_line: Callable[[_E], str],
) -> None:  # fmt: skip
    """`list` of dead letters or escalations: the newest `limit` as lines (and a count) or,
    given `as_dict`, as one JSON array."""
    import json

    shown = matching[-limit:] if limit > 0 else matching
    if as_dict is not None:
        typer.echo(json.dumps([as_dict(e) for e in shown], indent=1))
        return
    for entry in shown:
        typer.echo(as_line(entry))
    typer.echo(f"{len(shown)} shown of {len(matching)} matching, {total} in the topic")


def _echo_shown(
    matching: list[_E], ids: list[str] | None, limit: int, what: str,
    show_text: Callable[[_E], str],
) -> None:  # fmt: skip
    """`show`: the matching entries with these ids (all without), newest `limit`, in full;
    exit 1 when none is left."""
    chosen = [e for e in matching if e.id in set(ids)] if ids else matching
    chosen = chosen[-limit:] if limit > 0 else chosen
    if not chosen:
        typer.echo(f"no {what} matches", err=True)
        raise typer.Exit(code=1)
    typer.echo("\n\n".join(show_text(e) for e in chosen))


def _dead_letter_matches(
    topology_file: Path, stage: str | None, reason: str | None, since: str | None,
    run_id: str | None, client_config: Path | None = None,
) -> tuple[list[DeadLetterEntry], int]:  # fmt: skip
    from streams.inspect.dead_letters import DeadLetterFilter
    from streams.inspect.reading import dead_letters
    from streams.kafka.cluster import connect
    from streams.topology import load_topology

    def read() -> tuple[list[DeadLetterEntry], int]:
        topology = load_topology(topology_file, validate_handlers=False)
        since_ms = _since_ms(since)
        wanted = DeadLetterFilter(stage, reason, run_id, since_ms)
        client = connect(load_settings(), client_id="streams-dlq", file=client_config)
        total, matches = 0, []
        for entry in dead_letters(client, topology.dead_letter_topic, since_ms=since_ms):
            in_workflow = entry.letter is None or entry.letter.workflow == topology.workflow
            if in_workflow:
                total += 1
                if wanted.matches(entry):
                    matches.append(entry)
        return matches, total

    return _run(read)


@dlq_app.command("list")
def dlq_list(
    topology_file: _TopologyArg,
    stage: _StageOpt = None,
    reason: _ReasonOpt = None,
    since: _SinceOpt = None,
    run_id: _RunOpt = None,
    limit: Annotated[int, typer.Option(help="Show the newest this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
    client_config: _ClientConfigOpt = None,
) -> None:
    """One line per dead letter: id (for `dlq show`), when, stage, reason, origin, run, error."""

    from streams.inspect.dead_letters import entry_dict, list_line

    entries, total = _dead_letter_matches(
        topology_file, stage, reason, since, run_id, client_config
    )
    entries.sort(key=lambda e: e.letter.dead_at_ms if e.letter is not None else 0)
    _echo_list(entries, total, limit, entry_dict if as_json else None, list_line)


@dlq_app.command("show")
def dlq_show(
    topology_file: _TopologyArg,
    ids: Annotated[
        list[str] | None, typer.Argument(help="Ids from `dlq list` (partition:offset).")
    ] = None,
    stage: _StageOpt = None,
    reason: _ReasonOpt = None,
    since: _SinceOpt = None,
    run_id: _RunOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest).")] = 10,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Everything a dead letter holds: its task event decoded when it decodes, the raw
    bytes printed when it does not. Exit 1 when nothing matches."""
    from streams.inspect.dead_letters import show_text

    entries, _ = _dead_letter_matches(topology_file, stage, reason, since, run_id, client_config)
    _echo_shown(entries, ids, limit, "dead letter", show_text)


@dlq_app.command("replay")
def dlq_replay(
    topology_file: _TopologyArg,
    stage: _StageOpt = None,
    reason: _ReasonOpt = None,
    since: _SinceOpt = None,
    run_id: _RunOpt = None,
    rate: _RateOpt = 5.0,
    intake_url: _IntakeUrlOpt = None,
    deadline_in: _DeadlineInOpt = None,
    from_entry: Annotated[
        bool, typer.Option(help="Restart runs dead after the entry stage from their submission.")
    ] = False,
    dry_run: _DryRunOpt = False,
    as_json: _ResultsJsonOpt = False,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Send the matching dead letters back through the intake's admission (oldest first,
    at --rate), as new runs keyed by the dead letter; record each on W.replays. Already
    replayed ones are not sent again. Exit 3 when some were not admitted."""
    from streams.operate.replay_plan import ReplayItem

    entries, _ = _dead_letter_matches(topology_file, stage, reason, since, run_id, client_config)
    if not entries:
        typer.echo("no dead letter matches", err=True)
        raise typer.Exit(code=1)
    _replay(
        topology_file, [ReplayItem.of_dead_letter(e) for e in entries], "dlq",
        rate=rate, intake_url=intake_url, deadline_in=deadline_in, from_entry=from_entry,
        dry_run=dry_run, as_json=as_json, client_config=client_config,
    )  # fmt: skip


def _replay(
    topology_file: Path, items: list[ReplayItem], kind: str, *, rate: float,
    intake_url: str | None, deadline_in: str | None, from_entry: bool, dry_run: bool,
    as_json: bool, client_config: Path | None,
) -> None:  # fmt: skip
    """`dlq replay` and `escalations replay` after they chose what to send (`items`, read
    from the dead-letter topic or, `kind` "escalations", the escalations topic)."""
    import json
    import time

    from streams.kafka.cluster import connect
    from streams.operate.doors import AdmissionDoor, HttpDoor, ReplicaDoor
    from streams.operate.replay import ReplayOptions, ReplayTarget, replay
    from streams.operate.replay_log import ReplayLog
    from streams.operate.replay_plan import (
        NOT_DONE,
        ReplayResult,
        counts,
        parse_duration_s,
        result_line,
        summary_line,
    )
    from streams.operate.submissions import find_submissions
    from streams.topology import load_topology

    if not rate > 0:
        raise typer.BadParameter("--rate must be above 0")

    def show(result: ReplayResult) -> None:
        if not as_json:
            typer.echo(result_line(result))
            sys.stdout.flush()

    def run() -> list[ReplayResult]:
        from streams.intake.config import load_intake_config

        topology = load_topology(topology_file, validate_handlers=False)
        entry_stage = load_intake_config(topology).entry_stage
        deadline_ms = None
        if deadline_in is not None:
            try:
                deadline_ms = int((time.time() + parse_duration_s(deadline_in)) * 1000)
            except ValueError as exc:
                raise ConfigError("--deadline-in", "", str(exc)) from None
        client = connect(load_settings(), client_id="streams-replay", file=client_config)

        def open_door() -> AdmissionDoor:
            if intake_url is not None:
                return HttpDoor(intake_url, topology.workflow)
            return ReplicaDoor(topology, client)

        submissions = {}
        if from_entry:
            later = {
                e.event.run_id: e.event.created_at_ms
                for e in items
                if e.event is not None and e.stage not in (None, entry_stage)
            }
            submissions = find_submissions(client, topology, entry_stage, later)
        log = ReplayLog(client, topology.workflow)
        topic = topology.dead_letter_topic if kind == "dlq" else topology.escalations_topic
        try:
            target = ReplayTarget(topology.workflow, topic, entry_stage)
            options = ReplayOptions(rate, deadline_ms, dry_run, from_entry)
            return replay(
                items, target, log, open_door, options, submissions=submissions,
                on_result=show,
            )  # fmt: skip
        finally:
            log.close()

    results = _run(run)
    if as_json:
        report = {"results": [r.to_json() for r in results], "counts": counts(results)}
        typer.echo(json.dumps(report, indent=1))
    else:
        typer.echo(summary_line(results))
    if any(r.outcome in NOT_DONE for r in results):
        raise typer.Exit(code=3)


_EscalationReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Only this reason (escalated, retries_exhausted).")
]
_EscalatedSinceOpt = Annotated[
    str | None, typer.Option("--since", help="Escalated since: 10m, 2h, 1d or ISO 8601.")
]


def _escalation_matches(
    topology_file: Path, stage: str | None, reason: str | None, since: str | None,
    run_id: str | None, client_config: Path | None = None,
) -> tuple[list[EscalationEntry], int]:  # fmt: skip
    from streams.inspect.reading import entries
    from streams.kafka.cluster import connect
    from streams.operate.escalation_entries import EscalationFilter, decode_escalation
    from streams.topology import load_topology

    def read() -> tuple[list[EscalationEntry], int]:
        topology = load_topology(topology_file, validate_handlers=False)
        since_ms = _since_ms(since)
        wanted = EscalationFilter(stage, reason, run_id, since_ms)
        client = connect(load_settings(), client_id="streams-escalations", file=client_config)
        total, matches = 0, []
        topic = topology.escalations_topic
        for entry in entries(client, topic, decode_escalation, since_ms=since_ms):
            e = entry.escalation
            if e is None or e.workflow == topology.workflow:
                total += 1
                if wanted.matches(entry):
                    matches.append(entry)
        matches.sort(key=lambda m: m.escalation.escalated_at_ms if m.escalation else 0)
        return matches, total

    return _run(read)


@escalations_app.command("list")
def escalations_list(
    topology_file: _TopologyArg,
    stage: _StageOpt = None,
    reason: _EscalationReasonOpt = None,
    since: _EscalatedSinceOpt = None,
    run_id: _RunOpt = None,
    limit: Annotated[int, typer.Option(help="Show the newest this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
    client_config: _ClientConfigOpt = None,
) -> None:
    """One line per escalation: id (for `escalations show`), when, stage, reason, attempts,
    run, note or error."""

    from streams.operate.escalation_entries import entry_dict, list_line

    found, total = _escalation_matches(topology_file, stage, reason, since, run_id, client_config)
    _echo_list(found, total, limit, entry_dict if as_json else None, list_line)


@escalations_app.command("show")
def escalations_show(
    topology_file: _TopologyArg,
    ids: Annotated[
        list[str] | None, typer.Argument(help="Ids from `escalations list` (partition:offset).")
    ] = None,
    stage: _StageOpt = None,
    reason: _EscalationReasonOpt = None,
    since: _EscalatedSinceOpt = None,
    run_id: _RunOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest).")] = 10,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Everything an escalation holds (reason, note, error, where it came from): its task
    event decoded when it decodes, the bytes printed when not. Exit 1 when nothing matches."""
    from streams.operate.escalation_entries import show_text

    found, _ = _escalation_matches(topology_file, stage, reason, since, run_id, client_config)
    _echo_shown(found, ids, limit, "escalation", show_text)


@escalations_app.command("replay")
def escalations_replay(
    topology_file: _TopologyArg,
    stage: _StageOpt = None,
    reason: _EscalationReasonOpt = None,
    since: _EscalatedSinceOpt = None,
    run_id: _RunOpt = None,
    rate: _RateOpt = 5.0,
    intake_url: _IntakeUrlOpt = None,
    deadline_in: _DeadlineInOpt = None,
    from_entry: Annotated[
        bool,
        typer.Option(help="Restart runs escalated after the entry stage from the submission."),
    ] = False,
    dry_run: _DryRunOpt = False,
    as_json: _ResultsJsonOpt = False,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Send the matching escalations back through the intake's admission (oldest first, at
    --rate), as new runs keyed by the escalation; recorded on W.replays, so replayed ones
    are not sent again. Exit 3 when some were not admitted."""
    from streams.operate.escalation_entries import replay_item

    found, _ = _escalation_matches(topology_file, stage, reason, since, run_id, client_config)
    if not found:
        typer.echo("no escalation matches", err=True)
        raise typer.Exit(code=1)
    _replay(
        topology_file, [replay_item(e) for e in found], "escalations",
        rate=rate, intake_url=intake_url, deadline_in=deadline_in, from_entry=from_entry,
        dry_run=dry_run, as_json=as_json, client_config=client_config,
    )  # fmt: skip


@runs_app.command("get")
def runs_get(
    topology_file: _TopologyArg,
    run_id: Annotated[str, typer.Argument(help="The run's id (what the intake answered).")],
    intake_url: Annotated[
        str | None, typer.Option(help="Ask this running intake (default: read Kafka).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The status as JSON.")] = False,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Where a run is: undecided, queued (and in which stage), delayed, completed,
    dead_lettered or escalated; read from the run ledger (no intake needs to run).
    Exit 1 when the ledger does not know the run."""
    import json

    from streams.kafka.cluster import connect
    from streams.operate.runs import status_from_intake, status_from_kafka, status_text
    from streams.topology import load_topology

    def read() -> dict[str, object] | None:
        topology = load_topology(topology_file, validate_handlers=False)
        if intake_url is not None:
            return status_from_intake(intake_url, topology.workflow, run_id)
        client = connect(load_settings(), client_id="streams-runs", file=client_config)
        found = status_from_kafka(topology, client, run_id)
        return None if found is None else found.to_json()

    status = _run(read)
    if status is None:
        typer.echo(
            f"error: no run {run_id} in the ledger (never admitted, refused, or finished "
            "longer ago than intake.dedupe_window_s)",
            err=True,
        )
        raise typer.Exit(code=1)
    if as_json:
        typer.echo(json.dumps(status, indent=1))
    else:
        typer.echo(status_text(status, str(topology_file)))


@app.command("tail")
def tail(
    topology_file: _TopologyArg,
    stage: Annotated[str | None, typer.Option(help="Records entering this stage.")] = None,
    completed: Annotated[bool, typer.Option(help="Runs leaving the workflow.")] = False,
    since: Annotated[str, typer.Option(help="Start this far back: 0s (now), 10m, ISO.")] = "0s",
    count: Annotated[int | None, typer.Option(help="Exit after this many records.")] = None,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Print records as they pass: a stage's input (every lane) or the completed runs."""
    import signal
    import threading
    import time

    from streams.inspect.dead_letters import parse_since
    from streams.inspect.reading import follow
    from streams.inspect.records import record_line
    from streams.kafka.cluster import connect
    from streams.topology import load_topology

    if (stage is None) == (not completed):
        raise typer.BadParameter("give one of --stage S or --completed")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def run() -> int:
        topology = load_topology(topology_file, validate_handlers=False)
        if stage is not None and stage not in topology.stages:
            known = ", ".join(topology.stages)
            raise ConfigError(str(topology_file), "stages", f"no stage {stage!r} (has {known})")
        topics = [topology.completed_topic] if stage is None else list(
            topology.stages[stage].input_topics
        )  # fmt: skip
        try:
            since_ms = parse_since(since, time.time())
        except ValueError as exc:
            raise ConfigError("--since", "", str(exc)) from None
        client = connect(load_settings(), client_id="streams-tail", file=client_config)

        def show(record: Record) -> None:
            typer.echo(record_line(record))
            sys.stdout.flush()

        def ready() -> None:
            typer.echo(f"following {', '.join(topics)} (Ctrl-C stops)", err=True)

        return follow(
            client, topics, show, since_ms=since_ms, stop=stop, count=count, on_ready=ready
        )

    _run(run)


@topology_app.command("validate")
def topology_validate(file: Annotated[Path, typer.Argument(help="Topology YAML.")]) -> None:
    """Check a topology file, intake section included; print its stages, topics and
    intake, or the first mistake."""
    from streams.topology import load_intake_config, load_topology

    sys.path.insert(0, str(Path.cwd()))
    topology = _run(lambda: load_topology(file))
    typer.echo(f"{file}: workflow {topology.workflow} is valid")
    for stage in topology.stages.values():
        kind = "background" if stage.background else "stage"
        arrow = ", ".join(stage.downstream) or "-"
        typer.echo(f"  {kind} {stage.name}: {', '.join(stage.input_topics)} -> {arrow}")
    if topology.intake is None:
        # No intake section, and its defaults do not fit: fine for workers, not an error.
        try:
            load_intake_config(topology)
        except ConfigError as exc:
            typer.echo(
                f"  intake: not served by the intake until set: {exc.key_path}: {exc.problem}"
            )
        return
    intake = topology.intake
    typer.echo(
        f"  intake: runs enter {intake.entry_stage}, default lane {intake.default_lane}, "
        f"max {intake.limits.max_queued} queued"
    )


@topology_app.command("apply")
def topology_apply(
    file: Annotated[Path, typer.Argument(help="Topology YAML.")],
    dry_run: Annotated[bool, typer.Option(help="Only print the difference.")] = False,
    client_config: _ClientConfigOpt = None,
) -> None:
    """Create or grow the workflow's topics (idempotent); never shrinks partitions. With a
    schema registry, first checks every subject's compatibility, then registers them."""
    from streams.kafka.admin import Admin, TopicWanted
    from streams.kafka.cluster import connect
    from streams.operate.schema_subjects import apply_subjects, configured_client, plan_subjects
    from streams.serde import SchemaStore
    from streams.topology import load_topology

    def apply() -> int:
        topology = load_topology(file, validate_handlers=False)
        registry = configured_client()
        # Refuse an incompatible schema before anything changes (raises SchemaIncompatible).
        subjects = [] if registry is None else plan_subjects(registry, topology, SchemaStore())
        admin = Admin(connect(load_settings(), client_id="streams-apply", file=client_config))
        wanted = [
            TopicWanted(name, spec.partitions, spec.retention_ms, spec.compacted)
            for name, spec in topology.all_topics().items()
        ]
        changes = admin.plan(wanted) if dry_run else admin.apply(wanted)
        for change in changes:
            typer.echo(f"  {change.action:<15} {change.name}: {change.detail}")
        if registry is not None and not dry_run:
            subjects = apply_subjects(registry, topology, SchemaStore())
        for subject in subjects:
            schema_id = "" if subject.schema_id is None else f" id {subject.schema_id}"
            typer.echo(f"  {subject.action:<15} {subject.subject}: {subject.schema}{schema_id}")
        return sum(c.action == "refused_shrink" for c in changes)

    if _run(apply):
        typer.echo("error: some topics have more partitions than the topology asks", err=True)
        raise typer.Exit(code=1)


@app.command("demo")
def demo(
    quick: Annotated[bool, typer.Option(help="The 2-minute version.")] = False,
    live: Annotated[bool | None, typer.Option(help="Live view (default: on a terminal).")] = None,
    out: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    client_config: _ClientConfigOpt = None,
    compare_ladder: Annotated[
        bool | None,
        typer.Option(help="Also run governed without its degradation ladder (default: full demo)."),
    ] = None,
) -> None:
    """Run the triage workflow under overload, governed then naive, and report."""
    from rich.console import Console

    from streams.demo.main import run_demo

    console = Console()
    show_live = console.is_terminal if live is None else live
    result = _run(
        lambda: run_demo(
            load_settings(),
            quick=quick,
            live=show_live,
            out_root=out,
            console=console,
            client_file=client_config,
            compare_ladder=compare_ladder,
        )
    )
    typer.echo(f"report: {result.report}")
    for failure in result.failures:
        typer.echo(f"NOT SHOWN: {failure}", err=True)
    if not result.ok:
        raise typer.Exit(code=1)


def main() -> None:
    app()
