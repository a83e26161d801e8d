"""`streams control TOPOLOGY ...`: operators' controls of one workflow (README "Operator
controls"). Every command writes one record per change to `W.control` and returns once the
broker has acknowledged it; every worker and intake acts on it within about a second.

Owns argv for these commands; must not decide what they mean (streams.control.commands).
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from streams.config import load_settings
from streams.control.commands import (
    clear_records,
    degrade_record,
    parse_duration_s,
    pause_record,
    resume_record,
    tool_record,
)
from streams.control.follow import ControlFollower
from streams.control.records import ControlRecord
from streams.control.state import ControlView, control_view
from streams.control.topic import ensure_control_topic
from streams.control.writer import ControlWriter
from streams.errors import StreamsError
from streams.kafka.client_config import ClientConfig
from streams.topology import Topology

control_app = typer.Typer(
    no_args_is_help=True,
    help="Operator controls: force a level, pause a stage, force a tool open (W.control).",
)

_WhoOpt = Annotated[
    str | None, typer.Option("--who", help="Who does this, for the audit (default: $USER).")
]
_ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why, for the audit.")]


class _Target:
    def __init__(self, topology_file: Path, client_config: Path | None) -> None:
        self.topology_file = topology_file
        self.client_config = client_config

    def open(self) -> tuple[Topology, ClientConfig]:
        from streams.kafka.cluster import connect
        from streams.topology import load_topology

        topology = load_topology(self.topology_file, validate_handlers=False)
        client = connect(load_settings(), client_id="streams-control", file=self.client_config)
        ensure_control_topic(topology, client)
        return topology, client


@control_app.callback()
def control(
    ctx: typer.Context,
    topology_file: Annotated[Path, typer.Argument(help="The workflow's topology YAML.")],
    client_config: Annotated[
        Path | None,
        typer.Option("--client-config", help="librdkafka settings file (see streams worker)."),
    ] = None,
) -> None:
    """Operator controls of the workflow TOPOLOGY describes."""
    ctx.obj = _Target(topology_file, client_config)


def _who(who: str | None) -> str:
    if who:
        return who
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def _open(ctx: typer.Context) -> tuple[Topology, ClientConfig]:
    assert isinstance(ctx.obj, _Target)
    try:
        return ctx.obj.open()
    except StreamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _write(topology: Topology, client: ClientConfig, records: list[ControlRecord]) -> None:
    writer = ControlWriter(topology.control_topic, client)
    try:
        for record in records:
            writer.write(record)
            typer.echo(_said(record))
    finally:
        writer.close()
    if records:
        typer.echo(f"written to {topology.control_topic}; every worker acts on it within ~1 s")


def _clock_time(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _said(record: ControlRecord) -> str:
    by = f" by {record.who}" + (f" ({record.why})" if record.why else "")
    if record.kind == "level":
        if not record.active:
            return f"forced level {record.level} cleared{by}"
        expires = record.expires_at_ms
        until = " until cleared" if expires is None else f" until {_clock_time(expires)}"
        return f"level forced to {record.level}{until}{by}"
    if record.kind == "pause":
        return f"stage {record.target} {'paused' if record.active else 'resumed'}{by}"
    return (
        f"tool {record.target} {'forced open' if record.active else 'closed (breaker decides)'}{by}"
    )


def _command(
    ctx: typer.Context, make: Callable[[Topology, ClientConfig], list[ControlRecord]]
) -> None:
    topology, client = _open(ctx)
    try:
        records = make(topology, client)
        _write(topology, client, records)
    except StreamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


@control_app.command("degrade")
def degrade(
    ctx: typer.Context,
    level: Annotated[str, typer.Option("--level", help="The level to force (a ladder level).")],
    for_: Annotated[
        str | None, typer.Option("--for", help="For how long: 30m, 2h, 90s (default: until clear).")
    ] = None,
    reason: _ReasonOpt = None,
    who: _WhoOpt = None,
) -> None:
    """Force the workflow's degradation level (up or down), optionally for a while."""

    def make(topology: Topology, _client: ClientConfig) -> list[ControlRecord]:
        for_s = None if for_ is None else parse_duration_s(for_)
        return [
            degrade_record(topology, level, for_s=for_s, who=_who(who), why=reason, now=time.time())
        ]

    _command(ctx, make)


@control_app.command("pause")
def pause(
    ctx: typer.Context,
    stage: Annotated[
        str, typer.Option("--stage", help="The stage every worker stops fetching for.")
    ],
    reason: _ReasonOpt = None,
    who: _WhoOpt = None,
) -> None:
    """Pause a stage on all its workers (pause reason `operator`), across restarts and
    rebalances, until `resume`."""
    _command(
        ctx,
        lambda topology, _c: [
            pause_record(topology, stage, who=_who(who), why=reason, now=time.time())
        ],
    )


@control_app.command("resume")
def resume(
    ctx: typer.Context,
    stage: Annotated[str, typer.Option("--stage", help="The stage to resume.")],
    reason: _ReasonOpt = None,
    who: _WhoOpt = None,
) -> None:
    """End a manual pause of a stage."""
    _command(
        ctx,
        lambda topology, _c: [
            resume_record(topology, stage, who=_who(who), why=reason, now=time.time())
        ],
    )


@control_app.command("tool")
def tool(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The tool (topology tools:).")],
    open_: Annotated[
        bool,
        typer.Option(
            "--open/--close", help="Force its breaker open, or hand it back to the breaker."
        ),
    ] = True,
    reason: _ReasonOpt = None,
    who: _WhoOpt = None,
) -> None:
    """Force a tool's breaker open on every worker (calls refused ToolUnavailable, its
    stages pause), or --close to hand it back to its breaker."""
    _command(
        ctx,
        lambda topology, _c: [
            tool_record(topology, name, open_=open_, who=_who(who), why=reason, now=time.time())
        ],
    )


def _read(topology: Topology, client: ClientConfig) -> ControlView:
    follower = ControlFollower(topology, client)
    try:
        follower.read_to_end(10.0)
        return control_view(topology, follower.state(), time.time())
    finally:
        follower.close()


@control_app.command("clear")
def clear(ctx: typer.Context, reason: _ReasonOpt = None, who: _WhoOpt = None) -> None:
    """End every override: the forced level, every manual pause, every tool forced open."""

    def make(topology: Topology, client: ClientConfig) -> list[ControlRecord]:
        follower = ControlFollower(topology, client)
        try:
            follower.read_to_end(10.0)
            state = follower.state()
        finally:
            follower.close()
        records = clear_records(topology, state, who=_who(who), why=reason, now=time.time())
        if not records:
            typer.echo("nothing to clear")
        return records

    _command(ctx, make)


@control_app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """The level in force, and every active override with who set it, when and why."""
    topology, client = _open(ctx)
    try:
        view = _read(topology, client)
    except StreamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(view.to_json(), indent=1))
        return
    typer.echo(f"level: {view.level}" + (" (forced)" if view.forced else " (computed)"))
    for record in [
        *([view.forced] if view.forced else []),
        *view.paused_stages.values(),
        *view.tools_forced_open.values(),
    ]:
        typer.echo(f"{_said(record)}, at {_clock_time(record.at_ms)}")
